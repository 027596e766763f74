import { expect } from 'chai'
import fc from 'fast-check'
import type { ApiHarness, Session } from './api-harness.js'
import { v3 } from './api-harness.js'
import { parseSyncToken } from '../../../storage/sync.js'
import { createRoom, enc, membership, sendEvents, startReadApi, syncAs, text, visibility, type ClientEvent } from './read-fixtures.js'

interface RoomSection {
  timeline: { events: ClientEvent[]; limited: boolean; prev_batch: string }
  state: { events: ClientEvent[] }
  account_data: { events: unknown[] }
}
interface SyncBody {
  next_batch: string
  rooms: { join: Record<string, RoomSection>; invite: Record<string, { invite_state: { events: ClientEvent[] } }>; leave: Record<string, RoomSection> }
  account_data: { events: { type: string; content: unknown }[] }
  presence: { events: unknown[] }
}

describe('api /sync', function () {
  this.timeout(120_000)
  let h: ApiHarness
  let alice: Session
  let bob: Session
  let carol: Session
  before(async () => {
    h = await startReadApi()
    alice = await h.register('alice')
    bob = await h.register('bob')
    carol = await h.register('carol')
  })
  after(() => h.close())

  const sync = (session: Session, query: Record<string, string> = {}) => syncAs<SyncBody>(h, session, query)
  const only = (roomIds: string[], limit = 50) => JSON.stringify({ room: { rooms: roomIds, timeline: { limit } } })
  const bodies = (events: ClientEvent[]) => events.filter((e) => e.type === 'm.room.message').map((e) => e.content['body'])

  it('should show a joined room on initial sync with its state and a limited timeline', async () => {
    const roomId = await createRoom(h, alice.user_id, { name: 'Lobby' })
    await sendEvents(h, roomId, text(alice.user_id, 'a'), text(alice.user_id, 'b'), text(alice.user_id, 'c'))
    const body = await sync(alice, { filter: only([roomId], 2) })
    expect(body.next_batch).to.match(/^[sm][0-9~.]+_[0-9]+_[0-9]+_[0-9]+_[0-9]+_[0-9]+$/)
    // Syncing marked alice online; her sync shows it.
    const own = (body.presence.events as { sender: string; content: Record<string, unknown> }[]).find((e) => e.sender === alice.user_id)
    expect(own?.content).to.include({ presence: 'online', currently_active: true })
    expect(own?.content['last_active_ago']).to.be.below(5_000)
    const room = body.rooms.join[roomId]!
    expect(bodies(room.timeline.events)).to.deep.equal(['b', 'c'])
    expect(room.timeline.limited).to.equal(true)
    const state = room.state.events.map((e) => e.type)
    expect(state).to.include.members(['m.room.create', 'm.room.name', 'm.room.member', 'm.room.power_levels'])
    expect(room.state.events.find((e) => e.type === 'm.room.name')?.content).to.deep.equal({ name: 'Lobby' })
  })

  it('should return only new events on incremental sync, then paginate a limited gap back through prev_batch without gaps or duplicates', async () => {
    const roomId = await createRoom(h, alice.user_id)
    const first = await sync(alice, { filter: only([roomId]) })
    const known = new Set(first.rooms.join[roomId]!.timeline.events.map((e) => e.event_id))
    await sendEvents(h, roomId, text(alice.user_id, 'n1'))
    const second = await sync(alice, { since: first.next_batch, filter: only([roomId]) })
    expect(bodies(second.rooms.join[roomId]!.timeline.events)).to.deep.equal(['n1'])
    expect(second.rooms.join[roomId]!.timeline.limited).to.equal(false)
    const nothing = await sync(alice, { since: second.next_batch, filter: only([roomId]) })
    expect(nothing.rooms.join).to.deep.equal({})
    for (const e of second.rooms.join[roomId]!.timeline.events) known.add(e.event_id)

    for (let i = 0; i < 15; i++) await sendEvents(h, roomId, text(alice.user_id, `g${i}`))
    const third = await sync(alice, { since: second.next_batch, filter: only([roomId], 4) })
    const timeline = third.rooms.join[roomId]!.timeline
    expect(timeline.limited).to.equal(true)
    expect(bodies(timeline.events)).to.deep.equal(['g11', 'g12', 'g13', 'g14'])
    const back: ClientEvent[] = []
    let from: string | undefined = timeline.prev_batch
    while (from !== undefined) {
      const page = (await h.call('GET', `${v3}/rooms/${enc(roomId)}/messages?dir=b&limit=3&from=${enc(from)}`, { token: alice.access_token })).json() as { chunk: ClientEvent[]; end?: string }
      const fresh = page.chunk.filter((e) => !known.has(e.event_id))
      back.push(...fresh)
      from = fresh.length < page.chunk.length ? undefined : page.end
    }
    expect(bodies(back.reverse())).to.deep.equal(Array.from({ length: 11 }, (_, i) => `g${i}`))
  })

  it('should wake a long-poll when another user sends, well before the timeout', async () => {
    const roomId = await createRoom(h, alice.user_id, { joinRule: 'public' })
    await sendEvents(h, roomId, membership(bob.user_id, bob.user_id, 'join'))
    const start = await sync(bob, { filter: only([roomId]) })
    const started = Date.now()
    const polling = sync(bob, { since: start.next_batch, timeout: '20000', filter: only([roomId]) })
    await new Promise((resolve) => setTimeout(resolve, 300))
    await sendEvents(h, roomId, text(alice.user_id, 'wake up'))
    const body = await polling
    expect(Date.now() - started).to.be.below(10_000)
    expect(bodies(body.rooms.join[roomId]!.timeline.events)).to.deep.equal(['wake up'])
  })

  it("should wake a long-poll when the user's account data changes, and not another user's", async () => {
    const quiet = JSON.stringify({ room: { rooms: [] } })
    const [bobStart, carolStart] = [await sync(bob, { filter: quiet }), await sync(carol, { filter: quiet })]
    const started = Date.now()
    const bobPoll = sync(bob, { since: bobStart.next_batch, timeout: '20000', filter: quiet })
    const carolPoll = sync(carol, { since: carolStart.next_batch, timeout: '1500', filter: quiet }).then((body) => ({ body, ms: Date.now() - started }))
    await new Promise((resolve) => setTimeout(resolve, 300))
    const put = await h.call('PUT', `${v3}/user/${enc(bob.user_id)}/account_data/m.test.wake`, { token: bob.access_token, body: { n: 1 } })
    expect(put.statusCode).to.equal(200)
    const woken = await bobPoll
    expect(Date.now() - started, 'woken by the write, not the 20 s timeout').to.be.below(5000)
    expect(woken.account_data.events).to.deep.include({ type: 'm.test.wake', content: { n: 1 } })
    const carolAnswer = await carolPoll
    expect(carolAnswer.ms, "carol's poll ran its whole timeout").to.be.at.least(1400)
    expect(carolAnswer.body.account_data.events).to.deep.equal([])
  })

  it('should deliver account data written while a long-poll is woken by a message, in that answer or the next', async () => {
    const roomId = await createRoom(h, alice.user_id, { joinRule: 'public' })
    await sendEvents(h, roomId, membership(bob.user_id, bob.user_id, 'join'))
    for (let round = 0; round < 5; round++) {
      const start = await sync(bob, { filter: only([roomId]) })
      const polling = sync(bob, { since: start.next_batch, timeout: '20000', filter: only([roomId]) })
      await new Promise((resolve) => setTimeout(resolve, 100))
      // The message and the account data race: the poll may wake for either, or see both.
      const [, put] = await Promise.all([
        sendEvents(h, roomId, text(alice.user_id, `race ${round}`)),
        h.call('PUT', `${v3}/user/${enc(bob.user_id)}/account_data/m.test.race`, { token: bob.access_token, body: { round } }),
      ])
      expect(put.statusCode).to.equal(200)
      const woken = await polling
      const next = await sync(bob, { since: woken.next_batch, filter: only([roomId]) })
      const raced = [...woken.account_data.events, ...next.account_data.events].filter((e) => e.type === 'm.test.race')
      expect(raced, `round ${round}: the account data, once`).to.deep.equal([{ type: 'm.test.race', content: { round } }])
      const messages = [woken, next].flatMap((body) => bodies(body.rooms.join[roomId]?.timeline.events ?? []))
      expect(messages, `round ${round}: the message, once`).to.deep.equal([`race ${round}`])
    }
  })

  it('should wait the whole timeout when nothing happens in the user\'s rooms, and answer the same position', async () => {
    const mine = await createRoom(h, carol.user_id)
    const start = await sync(carol, { filter: only([mine]) })
    const theirs = await createRoom(h, alice.user_id)
    const started = Date.now()
    const polling = sync(carol, { since: start.next_batch, timeout: '700' })
    await sendEvents(h, theirs, text(alice.user_id, 'not for carol'))
    const body = await polling
    expect(Date.now() - started).to.be.at.least(650)
    expect(body.rooms.join).to.deep.equal({})
  })

  it('should show an invite in rooms.invite (waking a long-poll), and a leave in rooms.leave', async () => {
    const start = await sync(carol, { filter: JSON.stringify({ room: { timeline: { limit: 1 } } }) })
    const started = Date.now()
    const polling = sync(carol, { since: start.next_batch, timeout: '20000' })
    await new Promise((resolve) => setTimeout(resolve, 300))
    const roomId = await createRoom(h, alice.user_id, { name: 'Invitation', invite: [carol.user_id] })
    const invited = await polling
    expect(Date.now() - started).to.be.below(10_000)
    const inviteState = invited.rooms.invite[roomId]!.invite_state.events
    expect(inviteState.find((e) => e.type === 'm.room.name')?.content).to.deep.equal({ name: 'Invitation' })
    expect(inviteState.find((e) => e.type === 'm.room.member' && e.state_key === carol.user_id)?.content).to.deep.equal({ membership: 'invite' })
    expect(inviteState.every((e) => Object.keys(e).sort().join() === 'content,sender,state_key,type')).to.equal(true)
    expect(invited.rooms.join).to.not.have.property(roomId)

    await sendEvents(h, roomId, membership(carol.user_id, carol.user_id, 'join'))
    const joined = await sync(carol, { since: invited.next_batch })
    expect(joined.rooms.join).to.have.property(roomId)
    expect(joined.rooms.invite).to.not.have.property(roomId)
    await sendEvents(h, roomId, text(alice.user_id, 'still here'), membership(carol.user_id, carol.user_id, 'leave'))
    await sendEvents(h, roomId, text(alice.user_id, 'after carol left'))
    const left = await sync(carol, { since: joined.next_batch })
    expect(left.rooms.join).to.not.have.property(roomId)
    const leave = left.rooms.leave[roomId]!
    expect(leave.timeline.events.map((e) => e.content['body'] ?? e.content['membership'])).to.deep.equal(['still here', 'leave'])
    const after = await sync(carol, { since: left.next_batch })
    expect(after.rooms.leave).to.not.have.property(roomId)
    const initial = await sync(carol, { filter: JSON.stringify({ room: { include_leave: true } }) })
    expect(initial.rooms.leave).to.have.property(roomId)
    expect((await sync(carol)).rooms.leave).to.not.have.property(roomId)
  })

  it('should not show a long-poll woken by its own leave the events sent after it', async () => {
    const roomId = await createRoom(h, alice.user_id, { joinRule: 'public' })
    await sendEvents(h, roomId, membership(carol.user_id, carol.user_id, 'join'), text(alice.user_id, 'welcome'))
    const start = await sync(carol, { filter: only([roomId]) })
    expect(start.rooms.join).to.have.property(roomId)
    const polling = sync(carol, { since: start.next_batch, timeout: '20000', filter: only([roomId]) })
    await new Promise((resolve) => setTimeout(resolve, 300))
    // One batch: the woken read finds the room changed, and joined at its first read.
    await sendEvents(h, roomId, text(alice.user_id, 'before'), membership(carol.user_id, carol.user_id, 'leave'), text(alice.user_id, 'after carol left'))
    const woken = await polling
    expect(woken.rooms.join).to.not.have.property(roomId)
    expect(woken.rooms.leave[roomId]!.timeline.events.map((e) => e.content['body'] ?? e.content['membership'])).to.deep.equal(['before', 'leave'])
    expect(JSON.stringify(woken)).to.not.include('after carol left')
  })

  it('should never show a user the events of a room they are not in', async () => {
    const roomId = await createRoom(h, alice.user_id)
    const start = await sync(carol)
    await sendEvents(h, roomId, text(alice.user_id, 'private'))
    const next = await sync(carol, { since: start.next_batch })
    const initial = await sync(carol)
    for (const body of [next, initial]) {
      expect(body.rooms.join).to.not.have.property(roomId)
      expect(body.rooms.invite).to.not.have.property(roomId)
      expect(body.rooms.leave).to.not.have.property(roomId)
    }
  })

  it('should hide events before the join from a newly joined user under history visibility joined', async () => {
    const roomId = await createRoom(h, alice.user_id, { joinRule: 'public' })
    await sendEvents(h, roomId, visibility(alice.user_id, 'joined'), text(alice.user_id, 'before you came'))
    const start = await sync(bob, { filter: only([roomId]) })
    expect(start.rooms.join).to.not.have.property(roomId)
    await sendEvents(h, roomId, membership(bob.user_id, bob.user_id, 'join'), text(alice.user_id, 'welcome'))
    const body = await sync(bob, { since: start.next_batch, filter: only([roomId]) })
    const room = body.rooms.join[roomId]!
    expect(bodies(room.timeline.events)).to.deep.equal(['welcome'])
    // Created `shared`: the creation stays visible; the change to `joined` and what followed until the join do not.
    const visibilities = room.timeline.events.filter((e) => e.type === 'm.room.history_visibility').map((e) => e.content['history_visibility'])
    expect(visibilities).to.deep.equal(['shared'])
    expect(room.timeline.events.some((e) => e.type === 'm.room.member' && e.state_key === bob.user_id)).to.equal(true)
    const initial = await sync(bob, { filter: only([roomId]) })
    expect(bodies(initial.rooms.join[roomId]!.timeline.events)).to.deep.equal(['welcome'])
  })

  it('should apply uploaded and inline filters to timelines and account data', async () => {
    const roomId = await createRoom(h, alice.user_id)
    await sendEvents(h, roomId, text(alice.user_id, 'x'), { type: 'x.other', sender: alice.user_id, content: {} }, text(alice.user_id, 'y'))
    const upload = await h.call('POST', `${v3}/user/${enc(alice.user_id)}/filter`, { token: alice.access_token, body: { room: { rooms: [roomId], timeline: { limit: 1 } } } })
    const filterId = upload.json().filter_id as string
    const byId = await sync(alice, { filter: filterId })
    expect(Object.keys(byId.rooms.join)).to.deep.equal([roomId])
    expect(byId.rooms.join[roomId]!.timeline.events.map((e) => e.content['body'])).to.deep.equal(['y'])
    const typed = await sync(alice, { filter: JSON.stringify({ room: { rooms: [roomId], timeline: { types: ['x.*'] } } }) })
    expect(typed.rooms.join[roomId]!.timeline.events.map((e) => e.type)).to.deep.equal(['x.other'])

    await h.call('PUT', `${v3}/user/${enc(alice.user_id)}/account_data/m.direct`, { token: alice.access_token, body: { '@bob:hs.test': [roomId] } })
    const withData = await sync(alice, { since: byId.next_batch, filter: only([roomId]) })
    expect(withData.account_data.events.find((e) => e.type === 'm.direct')?.content).to.deep.equal({ '@bob:hs.test': [roomId] })
    const withoutData = await sync(alice, { since: byId.next_batch, filter: JSON.stringify({ account_data: { not_types: ['m.direct'] }, room: { rooms: [roomId] } }) })
    expect(withoutData.account_data.events.map((e) => e.type)).to.not.include('m.direct')
    const again = await sync(alice, { since: withData.next_batch, filter: only([roomId]) })
    expect(again.account_data.events).to.deep.equal([])

    for (const filter of ['{"room":{"timeline":{"limit":"ten"}}}', '{not json', '999999']) {
      const res = await h.call('GET', `${v3}/sync?filter=${enc(filter)}`, { token: alice.access_token })
      expect([filter, res.statusCode, res.json().errcode]).to.deep.equal([filter, 400, 'M_INVALID_PARAM'])
    }
  })

  it('should leave a room out of an incremental sync when the filter hides all its new events', async () => {
    const roomId = await createRoom(h, alice.user_id)
    const filter = JSON.stringify({ room: { rooms: [roomId], timeline: { types: ['m.room.message'] } } })
    const first = await sync(alice, { filter })
    await sendEvents(h, roomId, { type: 'x.hidden', sender: alice.user_id, content: {} })
    const hidden = await sync(alice, { since: first.next_batch, filter })
    expect(hidden.rooms.join).to.deep.equal({})
    expect(hidden.next_batch).to.not.equal(first.next_batch)
    await sendEvents(h, roomId, text(alice.user_id, 'shown'))
    const shown = await sync(alice, { since: hidden.next_batch, filter })
    expect(bodies(shown.rooms.join[roomId]!.timeline.events)).to.deep.equal(['shown'])
  })

  it("should show a room whose only news is the user's room account data, with no new events", async () => {
    const roomId = await createRoom(h, alice.user_id)
    const first = await sync(alice, { filter: only([roomId]) })
    await h.call('PUT', `${v3}/user/${enc(alice.user_id)}/rooms/${enc(roomId)}/account_data/m.tag`, { token: alice.access_token, body: { tags: { u: {} } } })
    const tagged = await sync(alice, { since: first.next_batch, filter: only([roomId]) })
    expect(Object.keys(tagged.rooms.join)).to.deep.equal([roomId])
    expect(tagged.rooms.join[roomId]!.account_data.events).to.deep.equal([{ type: 'm.tag', content: { tags: { u: {} } } }])
    expect(tagged.rooms.join[roomId]!.timeline.events).to.deep.equal([])
    const quiet = await sync(alice, { since: tagged.next_batch, filter: only([roomId]) })
    expect(quiet.rooms.join).to.deep.equal({})
  })

  it('should clamp a since from the future and answer promptly, and refuse malformed ones with 400 M_INVALID_PARAM', async () => {
    const started = Date.now()
    const future = await sync(alice, { since: 's900000000000_900000000_900000000_900000000_900000000_900000000', timeout: '0' })
    expect(Date.now() - started).to.be.below(4_000)
    expect(future.next_batch).to.match(/_[0-9]+_[0-9]+_[0-9]+_[0-9]+_[0-9]+$/)
    expect(parseSyncToken(future.next_batch).ephemeral! < 900000000n).to.equal(true)
    expect(parseSyncToken(future.next_batch).toDevice! < 900000000n).to.equal(true)
    expect(parseSyncToken(future.next_batch).presence! < 900000000n).to.equal(true)
    expect(parseSyncToken(future.next_batch).deviceLists! < 900000000n).to.equal(true)
    for (const since of ['x', 's12', 's12_', '_3', 's1_2_3_4_5_6_7', 's1_2_3_4_5_', 's1_2_3_4_5_06', 's1_2_', 's1_2_3_', 's1_2_03', 's1_2_3_04', 's1_2_3_4_', 's1_2_3_4_05', 't3-4_1', 's01_1', 's1_-1', 'm5~a.7_1']) {
      const res = await h.call('GET', `${v3}/sync?since=${enc(since)}`, { token: alice.access_token })
      expect([since, res.statusCode, res.json().errcode]).to.deep.equal([since, 400, 'M_INVALID_PARAM'])
    }
  })

  it('should form timeline events as the event API does: redacted with redacted_because, replaced state with prev_content', async () => {
    const roomId = await createRoom(h, alice.user_id, { joinRule: 'public' })
    await sendEvents(h, roomId, membership(bob.user_id, bob.user_id, 'join'))
    const start = await sync(bob, { filter: only([roomId]) })
    const topic = (value: string) => ({ type: 'm.room.topic', state_key: '', sender: alice.user_id, content: { topic: value } })
    const [first, , gone] = await sendEvents(h, roomId, topic('one'), topic('two'), text(alice.user_id, 'regretted'))
    const [redaction] = await sendEvents(h, roomId, { type: 'm.room.redaction', sender: alice.user_id, content: { redacts: gone!.event_id } })
    const polled = await sync(bob, { since: start.next_batch, filter: only([roomId]) })
    const [one, two, redacted, redactionEvent] = polled.rooms.join[roomId]!.timeline.events
    expect(one!.content).to.deep.equal({ topic: 'one' })
    expect(two!.unsigned).to.include({ replaces_state: first!.event_id })
    expect(two!.unsigned['prev_content']).to.deep.equal({ topic: 'one' })
    expect(redacted!.event_id).to.equal(gone!.event_id)
    expect(redacted!.content).to.deep.equal({})
    expect((redacted!.unsigned['redacted_because'] as ClientEvent).event_id).to.equal(redaction!.event_id)
    expect(redactionEvent!.event_id).to.equal(redaction!.event_id)
  })

  it('should show transaction_id only to the device that sent the event', async () => {
    const roomId = await createRoom(h, alice.user_id)
    await sendEvents(h, roomId, text(alice.user_id, 'mine', { deviceId: alice.device_id, txnId: 'sync-txn' }))
    const login = await h.call('POST', `${v3}/login`, { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: 'alice' }, password: 'correct horse battery' } })
    const other = login.json() as Session
    const own = (await sync(alice, { filter: only([roomId]) })).rooms.join[roomId]!.timeline.events.find((e) => e.content['body'] === 'mine')!
    const seen = (await sync(other, { filter: only([roomId]) })).rooms.join[roomId]!.timeline.events.find((e) => e.content['body'] === 'mine')!
    expect(own.unsigned['transaction_id']).to.equal('sync-txn')
    expect(seen.unsigned).to.not.have.property('transaction_id')
  })

  it('property: concatenated timelines (with limited gaps filled from prev_batch) are exactly the events of the user\'s rooms', async () => {
    // 'sync-while-sending' with `poll`: a long-poll (nothing new yet, so it waits) woken by the send.
    type Command = { kind: 'send'; rooms: number[]; bySelf: boolean } | { kind: 'sync' } | { kind: 'sync-while-sending'; room: number; poll: boolean }
    const command: fc.Arbitrary<Command> = fc.oneof(
      fc.record({ kind: fc.constant('send' as const), rooms: fc.array(fc.integer({ min: 0, max: 2 }), { minLength: 1, maxLength: 4 }), bySelf: fc.boolean() }),
      fc.constant({ kind: 'sync' as const }),
      fc.record({ kind: fc.constant('sync-while-sending' as const), room: fc.integer({ min: 0, max: 2 }), poll: fc.boolean() }),
    )
    await fc.assert(
      fc.asyncProperty(fc.array(command, { minLength: 1, maxLength: 12 }), fc.integer({ min: 1, max: 4 }), async (commands, limit) => {
        // Bob is in rooms 0 and 1; room 2 is Alice's alone.
        const rooms = [await createRoom(h, alice.user_id, { joinRule: 'public' }), await createRoom(h, alice.user_id, { joinRule: 'public' }), await createRoom(h, alice.user_id)]
        await sendEvents(h, rooms[0]!, membership(bob.user_id, bob.user_id, 'join'))
        await sendEvents(h, rooms[1]!, membership(bob.user_id, bob.user_id, 'join'))
        const filter = only(rooms, limit)
        const seen = new Map<string, string[]>(rooms.map((r) => [r, []]))
        let counter = 0
        const take = async (body: SyncBody) => {
          for (const [roomId, section] of Object.entries(body.rooms.join)) {
            const list = seen.get(roomId)!
            const known = new Set(list)
            const gap: string[] = []
            if (section.timeline.limited) {
              let from: string | undefined = section.timeline.prev_batch
              while (from !== undefined) {
                const page = (await h.call('GET', `${v3}/rooms/${enc(roomId)}/messages?dir=b&limit=5&from=${enc(from)}`, { token: bob.access_token })).json() as { chunk: ClientEvent[]; end?: string }
                const fresh = page.chunk.filter((e) => !known.has(e.event_id))
                gap.unshift(...fresh.map((e) => e.event_id).reverse())
                from = fresh.length < page.chunk.length ? undefined : page.end
              }
            }
            list.push(...gap, ...section.timeline.events.map((e) => e.event_id))
          }
          return body.next_batch
        }
        let since = await take(await sync(bob, { filter }))
        for (const c of commands) {
          if (c.kind === 'send') {
            await Promise.all(c.rooms.map((i) => sendEvents(h, rooms[i]!, text(c.bySelf && i < 2 ? bob.user_id : alice.user_id, `p${counter++}`))))
          } else if (c.kind === 'sync') {
            since = await take(await sync(bob, { since, filter }))
          } else if (!c.poll) {
            const [body] = await Promise.all([sync(bob, { since, filter }), sendEvents(h, rooms[c.room]!, text(alice.user_id, `p${counter++}`))])
            since = await take(body)
          } else {
            // Catch up first, so that the long-poll has nothing to answer until the send.
            since = await take(await sync(bob, { since, filter }))
            const polling = sync(bob, { since, filter, timeout: c.room === 2 ? '300' : '10000' })
            await new Promise((resolve) => setTimeout(resolve, 50))
            await sendEvents(h, rooms[c.room]!, text(alice.user_id, `p${counter++}`))
            since = await take(await polling)
          }
        }
        await take(await sync(bob, { since, filter }))
        for (const [index, roomId] of rooms.entries()) {
          const ids = seen.get(roomId)!
          expect(new Set(ids).size, 'no duplicates').to.equal(ids.length)
          const stored = await h.t.db.selectFrom('events').select('event_id').where('room_id', '=', roomId).orderBy('stream_ordering').execute()
          expect(ids, `room ${index}`).to.deep.equal(index === 2 ? [] : stored.map((r) => r.event_id))
        }
      }),
      { numRuns: 12 },
    )
  })
})
