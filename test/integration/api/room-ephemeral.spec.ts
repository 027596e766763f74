import { expect } from 'chai'
import fc from 'fast-check'
import { roomReadRoutes } from '../../../api/routes/room-reads.js'
import { roomWriteRoutes } from '../../../api/routes/rooms.js'
import { syncRoutes } from '../../../api/routes/sync.js'
import { parseSyncToken } from '../../../storage/sync.js'
import { startApi, v3, type ApiHarness, type Session } from './api-harness.js'
import { createRoom, enc, membership, sendEvents, syncAs, text } from './read-fixtures.js'

type ReceiptContent = Record<string, Record<string, Record<string, { ts: number; thread_id?: string }>>>
interface JoinedRoom {
  timeline: { events: { event_id: string }[] }
  account_data: { events: { type: string; content: Record<string, unknown> }[] }
  ephemeral: { events: ({ type: 'm.receipt'; content: ReceiptContent } | { type: 'm.typing'; content: { user_ids: string[] } })[] }
}
interface SyncBody {
  next_batch: string
  rooms: { join: Record<string, JoinedRoom> }
}

describe('api receipts, read markers and typing', function () {
  this.timeout(120_000)
  let h: ApiHarness
  let alice: Session
  let bob: Session
  let carol: Session
  before(async () => {
    // The write routes too: leaving stops typing.
    h = await startApi({ roomRoutes: (services) => [roomReadRoutes(services), roomWriteRoutes(services), syncRoutes(services)] })
    alice = await h.register('alice')
    bob = await h.register('bob')
    carol = await h.register('carol')
  })
  after(() => h.close())

  const sync = (session: Session, query: Record<string, string> = {}) => syncAs<SyncBody>(h, session, query)
  const only = (roomId: string, extra: Record<string, unknown> = {}) => JSON.stringify({ room: { rooms: [roomId], timeline: { limit: 5 }, ...extra } })
  const receipt = (session: Session, roomId: string, type: string, eventId: string, body?: unknown) =>
    h.call('POST', `${v3}/rooms/${enc(roomId)}/receipt/${enc(type)}/${enc(eventId)}`, { token: session.access_token, ...(body !== undefined && { body }) })
  const markers = (session: Session, roomId: string, body: unknown) => h.call('POST', `${v3}/rooms/${enc(roomId)}/read_markers`, { token: session.access_token, body })
  /** The room's `m.receipt` content in a sync answer ({} when none). */
  const receiptsIn = (body: SyncBody, roomId: string): ReceiptContent => {
    const events = (body.rooms.join[roomId]?.ephemeral.events ?? []).filter((e) => e.type === 'm.receipt')
    expect(events.length).to.be.at.most(1)
    return (events[0]?.content as ReceiptContent | undefined) ?? {}
  }
  /** The room's `m.typing` user list in a sync answer (undefined when the answer has none). */
  const typingIn = (body: SyncBody, roomId: string): string[] | undefined => {
    const events = (body.rooms.join[roomId]?.ephemeral.events ?? []).filter((e) => e.type === 'm.typing')
    expect(events.length).to.be.at.most(1)
    return (events[0]?.content as { user_ids: string[] } | undefined)?.user_ids
  }
  const typing = (session: Session, roomId: string, body: unknown, userId = session.user_id) =>
    h.call('PUT', `${v3}/rooms/${enc(roomId)}/typing/${enc(userId)}`, { token: session.access_token, body })
  /** A room of alice's that bob joined, with `count` messages from alice; their IDs. */
  const roomWithMessages = async (count: number): Promise<{ roomId: string; ids: string[] }> => {
    const roomId = await createRoom(h, alice.user_id, { joinRule: 'public' })
    await sendEvents(h, roomId, membership(bob.user_id, bob.user_id, 'join'))
    const sent = await sendEvents(h, roomId, ...Array.from({ length: count }, (_, i) => text(alice.user_id, `m${i}`)))
    return { roomId, ids: sent.map((e) => e.event_id) }
  }

  it("should show a member's m.read receipt to the others in sync, once, and in every initial sync", async () => {
    const { roomId, ids } = await roomWithMessages(2)
    const start = await sync(alice, { filter: only(roomId) })
    const before = Date.now()
    const res = await receipt(bob, roomId, 'm.read', ids[1]!)
    expect([res.statusCode, res.json()]).to.deep.equal([200, {}])

    const next = await sync(alice, { since: start.next_batch, filter: only(roomId) })
    const content = receiptsIn(next, roomId)
    expect(Object.keys(content)).to.deep.equal([ids[1]])
    const ts = content[ids[1]!]!['m.read']![bob.user_id]!.ts
    expect(ts).to.be.within(before - 1, Date.now() + 1)
    expect(next.rooms.join[roomId]!.timeline.events).to.deep.equal([])

    const quiet = await sync(alice, { since: next.next_batch, filter: only(roomId) })
    expect(quiet.rooms.join).to.deep.equal({})
    for (const session of [alice, bob]) {
      expect(receiptsIn(await sync(session, { filter: only(roomId) }), roomId)).to.deep.equal({ [ids[1]!]: { 'm.read': { [bob.user_id]: { ts } } } })
    }
  })

  it('should never move a receipt back to an older event, and keep threads apart', async () => {
    const { roomId, ids } = await roomWithMessages(3)
    expect((await receipt(bob, roomId, 'm.read', ids[2]!)).statusCode).to.equal(200)
    expect((await receipt(bob, roomId, 'm.read', ids[0]!)).statusCode).to.equal(200)
    expect((await receipt(bob, roomId, 'm.read', ids[1]!, { thread_id: 'main' })).statusCode).to.equal(200)
    const content = receiptsIn(await sync(alice, { filter: only(roomId) }), roomId)
    expect(Object.keys(content).sort()).to.deep.equal([ids[1]!, ids[2]!].sort())
    expect(content[ids[2]!]!['m.read']![bob.user_id]).to.not.have.property('thread_id')
    expect(content[ids[1]!]!['m.read']![bob.user_id]!.thread_id).to.equal('main')
  })

  it('should show an m.read.private receipt to its own user only', async () => {
    const { roomId, ids } = await roomWithMessages(1)
    expect((await receipt(bob, roomId, 'm.read.private', ids[0]!)).statusCode).to.equal(200)
    expect(receiptsIn(await sync(alice, { filter: only(roomId) }), roomId)).to.deep.equal({})
    const own = receiptsIn(await sync(bob, { filter: only(roomId) }), roomId)
    expect(Object.keys(own[ids[0]!]!)).to.deep.equal(['m.read.private'])
  })

  it('should set the fully read marker as room account data, never backwards, through both routes', async () => {
    const { roomId, ids } = await roomWithMessages(3)
    const fullyRead = async () => {
      const res = await h.call('GET', `${v3}/user/${enc(bob.user_id)}/rooms/${enc(roomId)}/account_data/m.fully_read`, { token: bob.access_token })
      return res.statusCode === 200 ? res.json<{ event_id: string }>().event_id : res.statusCode
    }
    expect(await fullyRead()).to.equal(404)
    expect((await receipt(bob, roomId, 'm.fully_read', ids[1]!)).statusCode).to.equal(200)
    expect(await fullyRead()).to.equal(ids[1])
    expect((await markers(bob, roomId, { 'm.fully_read': ids[0], 'm.read': ids[2] })).statusCode).to.equal(200)
    expect(await fullyRead()).to.equal(ids[1])
    const body = await sync(bob, { filter: only(roomId) })
    expect(body.rooms.join[roomId]!.account_data.events).to.deep.equal([{ type: 'm.fully_read', content: { event_id: ids[1] } }])
    expect(Object.keys(receiptsIn(body, roomId))).to.deep.equal([ids[2]])
    expect((await markers(bob, roomId, { 'm.fully_read': ids[2] })).statusCode).to.equal(200)
    expect(await fullyRead()).to.equal(ids[2])
  })

  it('should refuse what is not allowed or not there with a Matrix error, and store nothing of it', async () => {
    const { roomId, ids } = await roomWithMessages(1)
    const other = await roomWithMessages(1)
    const start = await sync(alice, { filter: only(roomId) })
    const cases: [string, Promise<{ statusCode: number; json: () => { errcode?: string } }>, number, string][] = [
      ['non-member', receipt(carol, roomId, 'm.read', ids[0]!), 403, 'M_FORBIDDEN'],
      ['unknown room', receipt(bob, '!nowhere:hs.test', 'm.read', ids[0]!), 404, 'M_NOT_FOUND'],
      ['malformed room', receipt(bob, 'nowhere', 'm.read', ids[0]!), 400, 'M_INVALID_PARAM'],
      ['unknown type', receipt(bob, roomId, 'm.seen', ids[0]!), 400, 'M_INVALID_PARAM'],
      ['malformed event', receipt(bob, roomId, 'm.read', 'not-an-event'), 400, 'M_INVALID_PARAM'],
      ['event elsewhere', receipt(bob, roomId, 'm.read', other.ids[0]!), 404, 'M_NOT_FOUND'],
      ['unknown event', receipt(bob, roomId, 'm.read', '$nothing'), 404, 'M_NOT_FOUND'],
      ['threaded fully read', receipt(bob, roomId, 'm.fully_read', ids[0]!, { thread_id: 'main' }), 400, 'M_INVALID_PARAM'],
      ['bad thread', receipt(bob, roomId, 'm.read', ids[0]!, { thread_id: 'sideways' }), 400, 'M_INVALID_PARAM'],
      ['thread not a string', receipt(bob, roomId, 'm.read', ids[0]!, { thread_id: 7 }), 400, 'M_BAD_JSON'],
      ['markers: one unknown', markers(bob, roomId, { 'm.read': ids[0], 'm.fully_read': '$nothing' }), 404, 'M_NOT_FOUND'],
      ['markers: not an event ID', markers(bob, roomId, { 'm.read': 12 }), 400, 'M_BAD_JSON'],
      ['markers: no body', h.call('POST', `${v3}/rooms/${enc(roomId)}/read_markers`, { token: bob.access_token }), 400, 'M_NOT_JSON'],
      ['markers: non-member', markers(carol, roomId, { 'm.read': ids[0] }), 403, 'M_FORBIDDEN'],
      ['no token', h.call('POST', `${v3}/rooms/${enc(roomId)}/receipt/m.read/${enc(ids[0]!)}`, { body: {} }), 401, 'M_MISSING_TOKEN'],
    ]
    for (const [name, call, status, errcode] of cases) {
      const res = await call
      expect([name, res.statusCode, res.json().errcode]).to.deep.equal([name, status, errcode])
    }
    const after = await sync(alice, { since: start.next_batch, filter: only(roomId) })
    expect(after.rooms.join).to.deep.equal({})
    const fullyRead = await h.call('GET', `${v3}/user/${enc(bob.user_id)}/rooms/${enc(roomId)}/account_data/m.fully_read`, { token: bob.access_token })
    expect(fullyRead.statusCode).to.equal(404)
  })

  it('should wake a waiting sync when another member sends a receipt', async () => {
    const { roomId, ids } = await roomWithMessages(1)
    const start = await sync(alice, { filter: only(roomId) })
    const started = Date.now()
    const waiting = sync(alice, { since: start.next_batch, timeout: '20000', filter: only(roomId) })
    await new Promise((resolve) => setTimeout(resolve, 300))
    expect((await receipt(bob, roomId, 'm.read', ids[0]!)).statusCode).to.equal(200)
    const woken = await waiting
    expect(Date.now() - started).to.be.below(10_000)
    expect(Object.keys(receiptsIn(woken, roomId))).to.deep.equal([ids[0]])
  })

  it('should hide receipts from a filter that leaves m.receipt out of ephemeral', async () => {
    const { roomId, ids } = await roomWithMessages(1)
    expect((await receipt(bob, roomId, 'm.read', ids[0]!)).statusCode).to.equal(200)
    const body = await sync(alice, { filter: only(roomId, { ephemeral: { not_types: ['m.receipt'] } }) })
    expect(body.rooms.join[roomId]!.ephemeral.events).to.deep.equal([])
  })

  it('should take a two-part since token of earlier versions as "no receipts before now"', async () => {
    const { roomId, ids } = await roomWithMessages(2)
    expect((await receipt(bob, roomId, 'm.read', ids[0]!)).statusCode).to.equal(200)
    const start = await sync(alice, { filter: only(roomId) })
    const old = start.next_batch.split('_').slice(0, 2).join('_')
    const quiet = await sync(alice, { since: old, filter: only(roomId) })
    expect(quiet.rooms.join).to.deep.equal({})
    expect(parseSyncToken(quiet.next_batch).ephemeral).to.equal(parseSyncToken(start.next_batch).ephemeral)
    expect((await receipt(bob, roomId, 'm.read', ids[1]!)).statusCode).to.equal(200)
    const next = await sync(alice, { since: quiet.next_batch, filter: only(roomId) })
    expect(Object.keys(receiptsIn(next, roomId))).to.deep.equal([ids[1]])
  })

  it('should let incremental syncs add up to what an initial sync shows, whatever the receipts (property)', async () => {
    const { roomId, ids } = await roomWithMessages(4)
    await sendEvents(h, roomId, membership(carol.user_id, carol.user_id, 'join'))
    const members = [alice, bob, carol]
    // Threaded receipts go to the first two events, unthreaded ones to the last two: an
    // m.receipt content has one slot per event, type and user, so a user's threaded and
    // unthreaded receipts of one type cannot both be shown on the same event.
    const step = fc
      .record({ who: fc.integer({ min: 0, max: 2 }), type: fc.constantFrom('m.read', 'm.read.private'), slot: fc.integer({ min: 0, max: 1 }), thread: fc.constantFrom(undefined, 'main') })
      .map((s) => ({ ...s, event: s.thread === undefined ? 2 + s.slot : s.slot }))
    // The receipts the room holds, by user/type/thread: the latest event (by index) ever posted.
    const model = new Map<string, number>()
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 8 }), async (steps) => {
        let since = (await sync(alice, { filter: only(roomId) })).next_batch
        // What alice has seen: user/type/thread → event, from her incremental syncs.
        const seen = new Map<string, string>()
        const absorb = (content: ReceiptContent) => {
          for (const [eventId, byType] of Object.entries(content)) {
            for (const [type, byUser] of Object.entries(byType)) {
              for (const [user, data] of Object.entries(byUser)) seen.set(`${user} ${type} ${data.thread_id ?? ''}`, eventId)
            }
          }
        }
        absorb(receiptsIn(await sync(alice, { filter: only(roomId) }), roomId))
        for (const s of steps) {
          const res = await receipt(members[s.who]!, roomId, s.type, ids[s.event]!, s.thread === undefined ? {} : { thread_id: s.thread })
          expect(res.statusCode).to.equal(200)
          const key = `${members[s.who]!.user_id} ${s.type} ${s.thread ?? ''}`
          model.set(key, Math.max(model.get(key) ?? -1, s.event))
          const next = await sync(alice, { since, filter: only(roomId) })
          expectForward(since, next.next_batch)
          absorb(receiptsIn(next, roomId))
          since = next.next_batch
        }
        const whole = new Map<string, string>()
        const initial = receiptsIn(await sync(alice, { filter: only(roomId) }), roomId)
        for (const [eventId, byType] of Object.entries(initial)) {
          for (const [type, byUser] of Object.entries(byType)) {
            for (const [user, data] of Object.entries(byUser)) whole.set(`${user} ${type} ${data.thread_id ?? ''}`, eventId)
          }
        }
        expect(Object.fromEntries(seen)).to.deep.equal(Object.fromEntries(whole))
        const visible = [...model].filter(([key]) => !key.includes(' m.read.private ') || key.startsWith(`${alice.user_id} `))
        expect(Object.fromEntries(whole)).to.deep.equal(Object.fromEntries(visible.map(([key, event]) => [key, ids[event]])))
      }),
      { numRuns: 12 },
    )
  })

  it('should show who types to the other members, once per change: start, renewal (nothing), stop', async () => {
    const { roomId } = await roomWithMessages(1)
    const start = await sync(alice, { filter: only(roomId) })
    expect(typingIn(start, roomId)).to.equal(undefined)
    expect([(await typing(bob, roomId, { typing: true, timeout: 30_000 })).statusCode]).to.deep.equal([200])
    const started = await sync(alice, { since: start.next_batch, filter: only(roomId) })
    expect(typingIn(started, roomId)).to.deep.equal([bob.user_id])
    expect(typingIn(await sync(carol, { filter: only(roomId) }), roomId), 'not a member: no room at all').to.equal(undefined)
    expect(typingIn(await sync(alice, { filter: only(roomId) }), roomId), 'initial sync').to.deep.equal([bob.user_id])

    expect((await typing(bob, roomId, { typing: true, timeout: 30_000 })).statusCode).to.equal(200)
    const renewed = await sync(alice, { since: started.next_batch, filter: only(roomId) })
    expect(renewed.rooms.join, 'a renewal changes no list').to.deep.equal({})

    expect((await typing(alice, roomId, { typing: true })).statusCode).to.equal(200)
    const both = await sync(bob, { since: started.next_batch, filter: only(roomId) })
    expect(typingIn(both, roomId)).to.deep.equal([alice.user_id, bob.user_id].sort())

    expect((await typing(bob, roomId, { typing: false })).statusCode).to.equal(200)
    expect((await typing(alice, roomId, { typing: false })).statusCode).to.equal(200)
    const stopped = await sync(alice, { since: renewed.next_batch, filter: only(roomId) })
    expect(typingIn(stopped, roomId), 'an empty list says everyone stopped').to.deep.equal([])
    expect(typingIn(await sync(alice, { filter: only(roomId) }), roomId)).to.equal(undefined)
    expect((await typing(bob, roomId, { typing: false })).statusCode, 'stopping twice').to.equal(200)
    expect((await sync(alice, { since: stopped.next_batch, filter: only(roomId) })).rooms.join).to.deep.equal({})
  })

  it('should stop the typing of a member who leaves or is banned at once, not at their timeout', async () => {
    const { roomId } = await roomWithMessages(1)
    await sendEvents(h, roomId, membership(carol.user_id, carol.user_id, 'join'))
    const start = await sync(alice, { filter: only(roomId) })
    expect((await typing(bob, roomId, { typing: true, timeout: 60_000 })).statusCode).to.equal(200)
    expect((await typing(carol, roomId, { typing: true, timeout: 60_000 })).statusCode).to.equal(200)
    const both = await sync(alice, { since: start.next_batch, filter: only(roomId) })
    expect(typingIn(both, roomId)).to.deep.equal([bob.user_id, carol.user_id].sort())

    expect((await h.call('POST', `${v3}/rooms/${enc(roomId)}/leave`, { token: bob.access_token, body: {} })).statusCode).to.equal(200)
    const afterLeave = await sync(alice, { since: both.next_batch, filter: only(roomId) })
    expect(typingIn(afterLeave, roomId)).to.deep.equal([carol.user_id])
    const ban = await h.call('POST', `${v3}/rooms/${enc(roomId)}/ban`, { token: alice.access_token, body: { user_id: carol.user_id } })
    expect(ban.statusCode).to.equal(200)
    expect(typingIn(await sync(alice, { since: afterLeave.next_batch, filter: only(roomId) }), roomId)).to.deep.equal([])
  })

  it('should wake a waiting sync when someone starts typing, and again when their timeout runs out', async () => {
    const { roomId } = await roomWithMessages(1)
    const start = await sync(alice, { filter: only(roomId) })
    const waiting = sync(alice, { since: start.next_batch, timeout: '20000', filter: only(roomId) })
    await new Promise((resolve) => setTimeout(resolve, 300))
    const sent = Date.now()
    expect((await typing(bob, roomId, { typing: true, timeout: 1_000 })).statusCode).to.equal(200)
    const woken = await waiting
    expect(typingIn(woken, roomId)).to.deep.equal([bob.user_id])
    // The background sweep (every second) records the timeout; the long-poll wakes on it.
    const expired = await sync(alice, { since: woken.next_batch, timeout: '20000', filter: only(roomId) })
    expect(typingIn(expired, roomId)).to.deep.equal([])
    expect(Date.now() - sent).to.be.within(1_000, 10_000)
  })

  it('should refuse typing for someone else, outside the room, or with a malformed body', async () => {
    const { roomId } = await roomWithMessages(1)
    const start = await sync(alice, { filter: only(roomId) })
    const cases: [string, Promise<{ statusCode: number; json: () => { errcode?: string } }>, number, string][] = [
      ['for another user', typing(bob, roomId, { typing: true }, alice.user_id), 403, 'M_FORBIDDEN'],
      ['non-member', typing(carol, roomId, { typing: true }), 403, 'M_FORBIDDEN'],
      ['unknown room', typing(bob, '!nowhere:hs.test', { typing: true }), 404, 'M_NOT_FOUND'],
      ['malformed room', typing(bob, 'nowhere', { typing: true }), 400, 'M_INVALID_PARAM'],
      ['no typing', typing(bob, roomId, { timeout: 5 }), 400, 'M_BAD_JSON'],
      ['typing not a boolean', typing(bob, roomId, { typing: 'yes' }), 400, 'M_BAD_JSON'],
      ['negative timeout', typing(bob, roomId, { typing: true, timeout: -1 }), 400, 'M_BAD_JSON'],
      ['fractional timeout', typing(bob, roomId, { typing: true, timeout: 1.5 }), 400, 'M_BAD_JSON'],
      ['no body', h.call('PUT', `${v3}/rooms/${enc(roomId)}/typing/${enc(bob.user_id)}`, { token: bob.access_token }), 400, 'M_NOT_JSON'],
      ['no token', h.call('PUT', `${v3}/rooms/${enc(roomId)}/typing/${enc(bob.user_id)}`, { body: { typing: true } }), 401, 'M_MISSING_TOKEN'],
    ]
    for (const [name, call, status, errcode] of cases) {
      const res = await call
      expect([name, res.statusCode, res.json().errcode]).to.deep.equal([name, status, errcode])
    }
    expect((await sync(alice, { since: start.next_batch, filter: only(roomId) })).rooms.join).to.deep.equal({})
  })

  function expectForward(previous: string, next: string): void {
    const a = parseSyncToken(previous)
    const b = parseSyncToken(next)
    expect((b.ephemeral ?? 0n) >= (a.ephemeral ?? 0n)).to.equal(true)
    expect(b.accountData >= a.accountData).to.equal(true)
  }
})
