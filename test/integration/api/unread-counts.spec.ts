import { expect } from 'chai'
import fc from 'fast-check'
import { roomReadRoutes } from '../../../api/routes/room-reads.js'
import { roomWriteRoutes } from '../../../api/routes/rooms.js'
import { syncRoutes } from '../../../api/routes/sync.js'
import type { NewEvent } from '../../../persisters/new-event.js'
import type { EventRow } from '../../../storage/room-reads.js'
import { RoomStreamToken } from '../../../storage/streams/room-stream-token.js'
import { UnreadCounter } from '../../../storage/unread-counts.js'
import { countingQueries } from '../../support/db.js'
import { startApi, v3, type ApiHarness, type Session } from './api-harness.js'
import { createSharedRoom, enc, membership, sendEvents, syncAs, text } from './read-fixtures.js'

interface Counts {
  notification_count: number
  highlight_count: number
}
interface SyncBody {
  next_batch: string
  rooms: { join: Record<string, { unread_notifications: Counts }> }
}

describe('api unread notification counts', function () {
  this.timeout(120_000)
  let h: ApiHarness
  let alice: Session
  let bob: Session
  before(async () => {
    h = await startApi({ roomRoutes: (services) => [roomReadRoutes(services), roomWriteRoutes(services), syncRoutes(services)] })
    alice = await h.register('alice')
    bob = await h.register('bob')
  })
  after(() => h.close())

  const sync = (session: Session, query: Record<string, string> = {}) => syncAs<SyncBody>(h, session, query)
  const only = (roomId: string) => JSON.stringify({ room: { rooms: [roomId], timeline: { limit: 3 } } })
  const countsIn = (body: SyncBody, roomId: string): [number, number] | undefined => {
    const counts = body.rooms.join[roomId]?.unread_notifications
    return counts && [counts.notification_count, counts.highlight_count]
  }
  /** Counts as an initial sync (always counted afresh) shows them. */
  const fresh = async (session: Session, roomId: string) => countsIn(await sync(session, { filter: only(roomId) }), roomId)
  const receipt = async (session: Session, roomId: string, eventId: string, type = 'm.read', body: Record<string, unknown> = {}) => {
    const res = await h.call('POST', `${v3}/rooms/${enc(roomId)}/receipt/${type}/${enc(eventId)}`, { token: session.access_token, body })
    expect(res.statusCode, res.body).to.equal(200)
  }
  const muteRule = (session: Session, roomId: string, muted: boolean) =>
    h.call(muted ? 'PUT' : 'DELETE', `${v3}/pushrules/global/override/${enc(roomId)}`, {
      token: session.access_token,
      ...(muted && { body: { actions: [], conditions: [{ kind: 'event_match', key: 'room_id', pattern: roomId }] } }),
    })
  const mention = (sender: string, target: string): NewEvent => ({
    type: 'm.room.message',
    sender,
    content: { msgtype: 'm.text', body: 'look', 'm.mentions': { user_ids: [target] } },
  })
  const notice = (sender: string): NewEvent => ({ type: 'm.room.message', sender, content: { msgtype: 'm.notice', body: 'bot' } })

  it('should count what notifies since the receipt, in incremental syncs as in initial ones', async () => {
    const before = await createSharedRoom(h, alice)
    await sendEvents(h, before, text(alice.user_id, 'before bob joined'))
    await sendEvents(h, before, membership(bob.user_id, bob.user_id, 'join'))
    const roomId = before
    const start = await sync(bob, { filter: only(roomId) })
    // Events from before the join do not count.
    expect(countsIn(start, roomId)).to.deep.equal([0, 0])

    const sent = await sendEvents(h, roomId, text(alice.user_id, 'one'), notice(alice.user_id), mention(alice.user_id, bob.user_id), text(bob.user_id, 'mine'))
    const next = await sync(bob, { since: start.next_batch, timeout: '0', filter: only(roomId) })
    expect(countsIn(next, roomId)).to.deep.equal([2, 1])
    expect(await fresh(bob, roomId)).to.deep.equal([2, 1])
    // alice's own view: bob's message only.
    expect(await fresh(alice, roomId)).to.deep.equal([1, 0])

    // A receipt on the notice leaves the mention; a private receipt on the last event clears it.
    await receipt(bob, roomId, sent[1]!.event_id)
    const afterReceipt = await sync(bob, { since: next.next_batch, timeout: '0', filter: only(roomId) })
    expect(countsIn(afterReceipt, roomId)).to.deep.equal([1, 1])
    await receipt(bob, roomId, sent[3]!.event_id, 'm.read.private')
    const cleared = await sync(bob, { since: afterReceipt.next_batch, timeout: '0', filter: only(roomId) })
    expect(countsIn(cleared, roomId)).to.deep.equal([0, 0])
    // A threaded receipt (not `main`) leaves the main counts alone.
    const more = await sendEvents(h, roomId, text(alice.user_id, 'two'))
    await receipt(bob, roomId, more[0]!.event_id, 'm.read', { thread_id: '$some-thread' })
    expect(await fresh(bob, roomId)).to.deep.equal([1, 0])

    // A long-poll woken by a message counts it with the rest.
    const idle = await sync(bob, { filter: only(roomId) })
    const woken = sync(bob, { since: idle.next_batch, timeout: '10000', filter: only(roomId) })
    await new Promise((resolve) => setTimeout(resolve, 100))
    await sendEvents(h, roomId, mention(alice.user_id, bob.user_id))
    expect(countsIn(await woken, roomId)).to.deep.equal([2, 1])
  })

  it('should count threads apart for clients that ask, each cleared by its own receipts', async () => {
    const roomId = await createSharedRoom(h, alice, bob)
    const [root] = await sendEvents(h, roomId, text(alice.user_id, 'root'))
    const inThread = (body: string): NewEvent => ({ ...text(alice.user_id, body), content: { msgtype: 'm.text', body, 'm.relates_to': { rel_type: 'm.thread', event_id: root!.event_id } } })
    const threads = JSON.stringify({ room: { rooms: [roomId], timeline: { limit: 5, unread_thread_notifications: true } } })
    const view = (body: SyncBody) => {
      const room = body.rooms.join[roomId] as { unread_notifications: Counts; unread_thread_notifications?: Record<string, Counts> } | undefined
      return room && [room.unread_notifications.notification_count, room.unread_thread_notifications?.[root!.event_id]?.notification_count ?? 0]
    }
    let since = (await sync(bob, { filter: threads })).next_batch
    // Counted from the events the incremental sync brings.
    const replies = await sendEvents(h, roomId, inThread('r1'), inThread('r2'), text(alice.user_id, 'main'))
    let body = await sync(bob, { since, timeout: '0', filter: threads })
    expect(view(body)).to.deep.equal([2, 2])
    expect(countsIn(await sync(bob, { filter: only(roomId) }), roomId), 'without the filter: one count for all').to.deep.equal([4, 0])
    // A receipt in the thread clears the thread only; a main receipt clears the room's events only.
    since = body.next_batch
    await receipt(bob, roomId, replies[1]!.event_id, 'm.read', { thread_id: root!.event_id })
    body = await sync(bob, { since, timeout: '0', filter: threads })
    expect(view(body)).to.deep.equal([2, 0])
    since = body.next_batch
    await receipt(bob, roomId, replies[2]!.event_id, 'm.read', { thread_id: 'main' })
    await sendEvents(h, roomId, inThread('r3'))
    body = await sync(bob, { since, timeout: '0', filter: threads })
    expect(view(body)).to.deep.equal([0, 1])
    // The next reply is counted from the events the sync brings again.
    since = body.next_batch
    await sendEvents(h, roomId, inThread('r4'))
    expect(view(await sync(bob, { since, timeout: '0', filter: threads }))).to.deep.equal([0, 2])
  })

  it('should count under the rules as they are now: muting a room clears it, unmuting brings the count back', async () => {
    const roomId = await createSharedRoom(h, alice, bob)
    const start = await sync(bob, { filter: only(roomId) })
    await sendEvents(h, roomId, text(alice.user_id, 'a'), text(alice.user_id, 'b'))
    const first = await sync(bob, { since: start.next_batch, timeout: '0', filter: only(roomId) })
    expect(countsIn(first, roomId)).to.deep.equal([2, 0])
    expect((await muteRule(bob, roomId, true)).statusCode).to.equal(200)
    const muted = await sync(bob, { since: first.next_batch, timeout: '0', filter: only(roomId) })
    // The rule change is account data: the room is not in the answer, its next appearance counts anew.
    await sendEvents(h, roomId, text(alice.user_id, 'c'))
    const later = await sync(bob, { since: muted.next_batch, timeout: '0', filter: only(roomId) })
    expect(countsIn(later, roomId)).to.deep.equal([0, 0])
    expect((await muteRule(bob, roomId, false)).statusCode).to.equal(200)
    await sendEvents(h, roomId, text(alice.user_id, 'd'))
    const unmuted = await sync(bob, { since: later.next_batch, timeout: '0', filter: only(roomId) })
    expect(countsIn(unmuted, roomId)).to.deep.equal([4, 0])
  })

  it('should not carry counts past news a sync did not see: events its filter hid, a receipt read in another room view', async () => {
    const roomId = await createSharedRoom(h, alice, bob)
    const elsewhere = await createSharedRoom(h, alice, bob)
    const topicsOnly = JSON.stringify({ room: { rooms: [roomId], timeline: { types: ['m.room.topic'] } } })
    // Hidden events: a sync that saw none of alice's message must not vouch for the room's counts.
    let since = (await sync(bob, { filter: only(roomId) })).next_batch
    await sendEvents(h, roomId, text(alice.user_id, 'hidden'))
    since = (await sync(bob, { since, timeout: '0', filter: topicsOnly })).next_batch
    await sendEvents(h, roomId, text(alice.user_id, 'shown'))
    expect(countsIn(await sync(bob, { since, timeout: '0', filter: only(roomId) }), roomId)).to.deep.equal([2, 0])

    // A receipt read by a sync of another room: the next sync of this room starts after it.
    const [last] = await sendEvents(h, roomId, text(alice.user_id, 'read soon'))
    since = (await sync(bob, { filter: only(roomId) })).next_batch
    expect(countsIn(await sync(bob, { filter: only(roomId) }), roomId)).to.deep.equal([3, 0])
    await receipt(bob, roomId, last!.event_id)
    since = (await sync(bob, { since, timeout: '0', filter: only(elsewhere) })).next_batch
    await sendEvents(h, roomId, text(alice.user_id, 'after the receipt'))
    expect(countsIn(await sync(bob, { since, timeout: '0', filter: only(roomId) }), roomId)).to.deep.equal([1, 0])
  })

  it("should add a long-poll's new events to what it knows without a query, and recount when it cannot", async () => {
    const roomId = await createSharedRoom(h, alice, bob)
    await sendEvents(h, roomId, text(alice.user_id, 'unread'))
    const counter = new UnreadCounter()
    const counted = countingQueries(h.t.db)
    const at = (stream: bigint) => ({ room: RoomStreamToken.live(stream), receipts: 0n, accountData: 0n })
    const row = (event: Partial<EventRow> & Pick<EventRow, 'type'>): EventRow => ({
      eventId: '$x', roomId, stateKey: null, sender: alice.user_id, depth: 1n, streamOrdering: 1n, ...event,
      pdu: { type: event.type, room_id: roomId, sender: event.sender ?? alice.user_id, content: { body: 'hi' } },
    })
    const ask = (since: ReturnType<typeof at> | undefined, upTo: ReturnType<typeof at>, newEvents: EventRow[] | undefined) =>
      counter.count(counted.db, {
        userId: bob.user_id,
        ...(since && { since }),
        upTo,
        rulesChanged: false,
        rooms: [{ roomId, membershipAt: 1n << 62n, newEvents, ownReceiptMoved: false }],
        quietRooms: [],
      })
    const far = 1n << 60n
    expect((await ask(undefined, at(far), undefined)).get(roomId)?.get('main')).to.deep.equal({ notification_count: 1, highlight_count: 0 })
    expect(counted.queries, 'the rules and the counts').to.equal(2)
    counted.queries = 0
    const added = await ask(at(far), at(far + 1n), [row({ type: 'm.room.message' }), row({ type: 'm.room.message', sender: bob.user_id })])
    expect(added.get(roomId)?.get('main')).to.deep.equal({ notification_count: 2, highlight_count: 0 })
    expect(counted.queries, 'nothing read for events the sync brings').to.equal(0)
    // A member event changes the member count the rules read: counted again from the database.
    const recounted = await ask(at(far + 1n), at(far + 2n), [row({ type: 'm.room.member', stateKey: '@carol:hs.test' })])
    expect(recounted.get(roomId)?.get('main')).to.deep.equal({ notification_count: 1, highlight_count: 0 })
    expect(counted.queries, 'the counts only: the rules are known').to.equal(1)
  })

  it('should list the events that notified the user, newest first, with their actions and whether they are read (GET /notifications)', async () => {
    const roomId = await createSharedRoom(h, alice, bob)
    const other = await createSharedRoom(h, alice, bob)
    const [one] = await sendEvents(h, roomId, text(alice.user_id, 'one'))
    // The thread reply comes before the mention: a main receipt on the mention does not read it.
    const [reply] = await sendEvents(h, roomId, { ...text(alice.user_id, 'in thread'), content: { msgtype: 'm.text', body: 'in thread', 'm.relates_to': { rel_type: 'm.thread', event_id: one!.event_id } } })
    const [, mentioned] = await sendEvents(h, roomId, notice(alice.user_id), mention(alice.user_id, bob.user_id))
    await sendEvents(h, roomId, text(bob.user_id, 'mine'))
    const [elsewhere] = await sendEvents(h, other, text(alice.user_id, 'elsewhere'))
    interface Listed {
      notifications: { actions: unknown[]; event: { event_id: string; content: Record<string, unknown> }; read: boolean; room_id: string; ts: number }[]
      next_token?: string
    }
    const list = async (query: Record<string, string> = {}) => {
      const res = await h.call('GET', `${v3}/notifications?${new URLSearchParams(query).toString()}`, { token: bob.access_token })
      expect(res.statusCode, res.body).to.equal(200)
      return res.json<Listed>()
    }
    const ids = (page: Listed) => page.notifications.map((n) => n.event.event_id)
    // bob's other rooms (earlier tests) come after these four.
    const first = await list({ limit: '4' })
    expect(ids(first)).to.deep.equal([elsewhere!.event_id, mentioned!.event_id, reply!.event_id, one!.event_id])
    expect(first.notifications.map((n) => n.read)).to.deep.equal([false, false, false, false])
    expect(first.notifications[1]!.actions).to.deep.equal(['notify', { set_tweak: 'sound', value: 'default' }, { set_tweak: 'highlight' }])
    expect(first.notifications[1]).to.deep.include({ room_id: roomId })
    expect(first.notifications[3]!.event.content).to.deep.equal({ msgtype: 'm.text', body: 'one' })

    // A main-timeline receipt on the mention reads it and what came before, not the thread.
    await receipt(bob, roomId, mentioned!.event_id, 'm.read', { thread_id: 'main' })
    expect((await list({ limit: '4' })).notifications.map((n) => n.read)).to.deep.equal([false, true, false, true])
    expect(ids(await list({ only: 'highlight', limit: '1' }))).to.deep.equal([mentioned!.event_id])

    // Pages: the next one starts after the last of the first, and the last one has no token.
    const pages: string[] = []
    let from: string | undefined
    do {
      const page = await list({ limit: '3', ...(from !== undefined && { from }) })
      pages.push(...ids(page))
      from = page.next_token
    } while (from !== undefined)
    expect(pages.slice(0, 4)).to.deep.equal(ids(first))
    expect(new Set(pages).size).to.equal(pages.length)
    const bad = await h.call('GET', `${v3}/notifications?from=soon`, { token: bob.access_token })
    expect([bad.statusCode, bad.json<{ errcode: string }>().errcode]).to.deep.equal([400, 'M_INVALID_PARAM'])
  })

  it('should hold a bounded number of rooms, dropping the users who synced least recently', async () => {
    const roomId = await createSharedRoom(h, alice, bob)
    const counter = new UnreadCounter(2)
    const upTo = { room: RoomStreamToken.live(1n << 60n), receipts: 0n, accountData: 0n }
    const sizes: number[] = []
    for (const userId of ['@u1:hs.test', '@u2:hs.test', '@u3:hs.test', '@u4:hs.test']) {
      await counter.count(h.t.db, { userId, upTo, rulesChanged: false, rooms: [{ roomId, membershipAt: 1n, newEvents: undefined, ownReceiptMoved: false }], quietRooms: [] })
      sizes.push(counter.size)
    }
    // Each sync adds its room; the next one first drops the oldest users down to the bound.
    expect(sizes).to.deep.equal([1, 2, 3, 3])
  })

  it('should agree with a model over any sequence of messages, thread replies, receipts, redactions and mutes, in two token chains (property)', async () => {
    const roomId = await createSharedRoom(h, alice, bob)
    const elsewhere = await createSharedRoom(h, alice, bob)
    const threaded = (filter: Record<string, unknown>) => JSON.stringify({ room: { rooms: [roomId], timeline: { limit: 3, unread_thread_notifications: true, ...filter } } })
    const filters = {
      room: only(roomId),
      threads: threaded({}),
      elsewhere: only(elsewhere),
      topics: threaded({ types: ['m.room.topic'] }),
    }
    // Two thread roots, sent before bob's first sync.
    const roots = (await sendEvents(h, roomId, notice(alice.user_id), notice(alice.user_id))).map((e) => e.event_id)
    type Step =
      | { kind: 'plain' | 'mention' | 'notice' | 'own' | 'topic'; thread: number | undefined }
      | { kind: 'receipt'; back: number; type: 'm.read' | 'm.read.private'; thread: 'unthreaded' | 'main' | number }
      | { kind: 'redact'; back: number }
      | { kind: 'mute'; muted: boolean }
      | { kind: 'sync'; chain: 0 | 1; view: keyof typeof filters }
    const thread = fc.option(fc.constantFrom(0, 1), { nil: undefined })
    const step: fc.Arbitrary<Step> = fc.oneof(
      fc.record({ kind: fc.constantFrom('plain', 'mention', 'notice', 'own', 'topic') as fc.Arbitrary<'plain'>, thread }),
      fc.record({
        kind: fc.constant('receipt' as const),
        back: fc.nat(4),
        type: fc.constantFrom('m.read' as const, 'm.read.private' as const),
        thread: fc.constantFrom('unthreaded' as const, 'main' as const, 0, 1),
      }),
      fc.record({ kind: fc.constant('redact' as const), back: fc.nat(4) }),
      fc.record({ kind: fc.constant('mute' as const), muted: fc.boolean() }),
      // Syncs that see the room (its threads apart or not), another room only (the chain moves past the room's news unseen), or only its topics.
      fc.record({ kind: fc.constant('sync' as const), chain: fc.constantFrom(0 as const, 1 as const), view: fc.constantFrom('room' as const, 'threads' as const, 'elsewhere' as const, 'topics' as const) }),
    )
    // Everything in the room from bob's first sync on: what each event is and its thread ('main' or a root), in order.
    const history: { id: string; kind: string; thread: string }[] = []
    // bob's receipts: thread ('' unthreaded, 'main', a root) → the latest index.
    const receipts = new Map<string, number>()
    let muted = false
    const chains = [(await sync(bob, { filter: only(roomId) })).next_batch, (await sync(bob, { filter: only(roomId) })).next_batch]
    /** Counts by thread, as notifications and highlights. */
    const model = (): Map<string, [number, number]> => {
      const counts = new Map<string, [number, number]>()
      if (muted) return counts
      history.forEach((e, i) => {
        const read = Math.max(receipts.get('') ?? -1, receipts.get(e.thread) ?? -1)
        if (i <= read || (e.kind !== 'plain' && e.kind !== 'mention')) return
        const [n, hl] = counts.get(e.thread) ?? [0, 0]
        counts.set(e.thread, [n + 1, hl + (e.kind === 'mention' ? 1 : 0)])
      })
      return counts
    }
    const total = (): [number, number] => [...model().values()].reduce(([n, hl], [a, b]) => [n + a, hl + b], [0, 0])
    const byThread = () => {
      const { main = [0, 0], ...threads } = Object.fromEntries(model())
      return { main, threads: Object.fromEntries(Object.entries(threads).map(([root, [n, hl]]) => [root, { notification_count: n, highlight_count: hl }])) }
    }
    /** Checks the room's counts in an answer against the model (nothing to check when the room is not in it). */
    const check = (body: SyncBody, view: keyof typeof filters) => {
      const room = body.rooms.join[roomId] as { unread_notifications: Counts; unread_thread_notifications?: Record<string, Counts> } | undefined
      if (room === undefined) return
      const counts = [room.unread_notifications.notification_count, room.unread_notifications.highlight_count]
      if (view === 'room') return expect([counts, room.unread_thread_notifications]).to.deep.equal([total(), undefined])
      const expected = byThread()
      expect([counts, room.unread_thread_notifications ?? {}]).to.deep.equal([expected.main, expected.threads])
    }
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 12 }), async (steps) => {
        for (const s of steps) {
          if (s.kind === 'sync') {
            const body = await sync(bob, { since: chains[s.chain]!, timeout: '0', filter: filters[s.view] })
            chains[s.chain] = body.next_batch
            check(body, s.view)
          } else if (s.kind === 'receipt' || s.kind === 'redact') {
            const target = history[history.length - 1 - s.back]
            if (target === undefined) continue
            if (s.kind === 'receipt') {
              const threadId = s.thread === 'unthreaded' ? undefined : s.thread === 'main' ? 'main' : roots[s.thread]!
              await receipt(bob, roomId, target.id, s.type, threadId === undefined ? {} : { thread_id: threadId })
              receipts.set(threadId ?? '', Math.max(receipts.get(threadId ?? '') ?? -1, history.indexOf(target)))
            } else {
              const [e] = await sendEvents(h, roomId, { type: 'm.room.redaction', sender: alice.user_id, redacts: target.id, content: {} })
              history.push({ id: e!.event_id, kind: 'redaction', thread: 'main' })
            }
          } else if (s.kind === 'mute') {
            if (s.muted === muted) continue
            expect((await muteRule(bob, roomId, s.muted)).statusCode).to.equal(200)
            muted = s.muted
          } else {
            const root = s.thread === undefined || s.kind === 'topic' ? undefined : roots[s.thread]!
            const base: NewEvent =
              s.kind === 'plain'
                ? text(alice.user_id, 'hi')
                : s.kind === 'mention'
                  ? mention(alice.user_id, bob.user_id)
                  : s.kind === 'notice'
                    ? notice(alice.user_id)
                    : s.kind === 'own'
                      ? text(bob.user_id, 'mine')
                      : { type: 'm.room.topic', state_key: '', sender: alice.user_id, content: { topic: `t${history.length}` } }
            const event = root === undefined ? base : { ...base, content: { ...base.content, 'm.relates_to': { rel_type: 'm.thread', event_id: root } } }
            const [e] = await sendEvents(h, roomId, event)
            history.push({ id: e!.event_id, kind: s.kind, thread: root ?? 'main' })
          }
        }
        // Whatever the chains did, a sync from each now (when the room is in it) and initial ones agree with the model.
        for (const chain of [0, 1] as const) {
          const view = chain === 0 ? 'room' : 'threads'
          const body = await sync(bob, { since: chains[chain]!, timeout: '0', filter: filters[view] })
          chains[chain] = body.next_batch
          check(body, view)
        }
        check(await sync(bob, { filter: filters.room }), 'room')
        check(await sync(bob, { filter: filters.threads }), 'threads')
      }),
      { numRuns: 25 },
    )
  })
})
