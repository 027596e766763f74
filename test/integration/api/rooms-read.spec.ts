import { expect } from 'chai'
import type { ApiHarness, Session } from './api-harness.js'
import { v3 } from './api-harness.js'
import type { JsonObject } from '../../../storage/events/redaction.js'
import { clientFormer, parseEventFilter, queryEvents, readPage } from '../../../storage/room-reads.js'
import { createRoom, enc, membership, sendEvents, startReadApi, text, visibility, type ClientEvent } from './read-fixtures.js'
import { countingQueries } from '../../support/db.js'
import { retentionRule } from '../../../storage/history-purge.js'

describe('api room reads (state, event, messages, context, members)', function () {
  this.timeout(60_000)
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

  const get = (session: Session, path: string) => h.call('GET', `${v3}${path}`, { token: session.access_token })
  const bodies = (events: ClientEvent[]) => events.map((e) => e.content['body'])

  describe('state', () => {
    it('should answer the current state, one state event, and 404 for absent state', async () => {
      const roomId = await createRoom(h, alice.user_id, { name: 'Lobby' })
      const all = await get(alice, `/rooms/${enc(roomId)}/state`)
      expect(all.statusCode).to.equal(200)
      const types = (all.json() as ClientEvent[]).map((e) => `${e.type}|${e.state_key}`).sort()
      expect(types).to.deep.equal(
        ['m.room.create|', `m.room.member|${alice.user_id}`, 'm.room.power_levels|', 'm.room.join_rules|', 'm.room.history_visibility|', 'm.room.name|'].sort(),
      )
      expect((await get(alice, `/rooms/${enc(roomId)}/state/m.room.name`)).json()).to.deep.equal({ name: 'Lobby' })
      expect((await get(alice, `/rooms/${enc(roomId)}/state/m.room.name/`)).json()).to.deep.equal({ name: 'Lobby' })
      expect((await get(alice, `/rooms/${enc(roomId)}/state/m.room.member/${enc(alice.user_id)}`)).json()).to.deep.equal({ membership: 'join' })
      const absent = await get(alice, `/rooms/${enc(roomId)}/state/m.room.topic`)
      expect([absent.statusCode, absent.json().errcode]).to.deep.equal([404, 'M_NOT_FOUND'])
    })

    it('should refuse non-members with 403, unknown rooms with 404, and show a former member the state at their leave', async () => {
      const roomId = await createRoom(h, alice.user_id, { name: 'Before', joinRule: 'public' })
      const outsider = await get(carol, `/rooms/${enc(roomId)}/state`)
      expect([outsider.statusCode, outsider.json().errcode]).to.deep.equal([403, 'M_FORBIDDEN'])
      const unknown = await get(alice, `/rooms/${enc('!nope:hs.test')}/state`)
      expect([unknown.statusCode, unknown.json().errcode]).to.deep.equal([404, 'M_NOT_FOUND'])
      await sendEvents(h, roomId, membership(bob.user_id, bob.user_id, 'join'))
      await sendEvents(h, roomId, membership(bob.user_id, bob.user_id, 'leave'))
      await sendEvents(h, roomId, { type: 'm.room.name', state_key: '', sender: alice.user_id, content: { name: 'After' } })
      expect((await get(bob, `/rooms/${enc(roomId)}/state/m.room.name`)).json()).to.deep.equal({ name: 'Before' })
      expect((await get(alice, `/rooms/${enc(roomId)}/state/m.room.name`)).json()).to.deep.equal({ name: 'After' })
      const joined = await get(bob, `/rooms/${enc(roomId)}/joined_members`)
      expect(joined.statusCode).to.equal(403)
    })
  })

  describe('event', () => {
    it("should read a page with its redactions and the room's visibility at once, and form others' messages without another query", async () => {
      const roomId = await createRoom(h, alice.user_id, { joinRule: 'public' })
      await sendEvents(h, roomId, membership(bob.user_id, bob.user_id, 'join'))
      const [kept, redactedOne] = await sendEvents(h, roomId, text(bob.user_id, 'kept'), text(bob.user_id, 'regretted'))
      const [redaction] = await sendEvents(h, roomId, { type: 'm.room.redaction', sender: bob.user_id, content: { redacts: redactedOne!.event_id } })
      const counted = countingQueries(h.t.db)
      // The retention rule is read once per 10 s per database handle, not per page: read it first.
      await retentionRule(counted.db)
      counted.queries = 0
      const spec = { roomId, where: [], order: 'stream-asc' as const, limit: 100, filter: parseEventFilter({ types: ['m.room.message', 'm.room.redaction'] }) }
      const page = await readPage(counted.db, spec, { userId: alice.user_id, deviceId: alice.device_id })
      expect(counted.queries, 'the page with its redactions and the relations to bundle, the visibility').to.equal(2)
      const visible = page.visible(page.rows)
      const events = (await page.former(visible))(visible, 0)
      expect(counted.queries, 'nothing more to form them').to.equal(2)
      expect(events.map((event) => event['event_id'])).to.deep.equal([kept!.event_id, redactedOne!.event_id, redaction!.event_id])
      expect(events.map((event) => event['content'])).to.deep.equal([{ msgtype: 'm.text', body: 'kept' }, {}, { redacts: redactedOne!.event_id }])
      expect(((events[1]!['unsigned'] as JsonObject)['redacted_because'] as JsonObject)['event_id']).to.equal(redaction!.event_id)

      const outsider = await readPage(h.t.db, spec, { userId: carol.user_id })
      expect(outsider.visible(outsider.rows), 'events a non-member may not see').to.deep.equal([])
    })

    it("should look transaction IDs up only when the page holds the viewer's own events", async () => {
      const roomId = await createRoom(h, alice.user_id, { joinRule: 'public' })
      await sendEvents(h, roomId, membership(bob.user_id, bob.user_id, 'join'))
      const [own] = await sendEvents(h, roomId, text(alice.user_id, 'mine', { deviceId: alice.device_id, txnId: 'txn-own' }))
      const [other] = await sendEvents(h, roomId, text(bob.user_id, 'theirs', { deviceId: bob.device_id, txnId: 'txn-other' }))
      const rows = await queryEvents(h.t.db, roomId, [], 'stream-asc', 100)
      const ownRow = rows.find((row) => row.eventId === own!.event_id)!
      const otherRow = rows.find((row) => row.eventId === other!.event_id)!
      const counted = countingQueries(h.t.db)
      const viewer = { userId: alice.user_id, deviceId: alice.device_id }
      const transactionIds = (events: JsonObject[]) => events.map((event) => (event['unsigned'] as JsonObject)['transaction_id'])

      const formOthers = await clientFormer(counted.db, [otherRow], viewer)
      expect(counted.queries, 'queries for a page of other senders (its redactions, its relations)').to.equal(2)
      expect(transactionIds(formOthers([otherRow], 0))).to.deep.equal([undefined])

      counted.queries = 0
      const formMixed = await clientFormer(counted.db, [ownRow, otherRow], viewer)
      expect(counted.queries, 'queries for a page with an own event (redactions, relations, transaction IDs)').to.equal(3)
      expect(transactionIds(formMixed([ownRow, otherRow], 0))).to.deep.equal(['txn-own', undefined])
    })

    it('should answer an event with age, transaction_id only for the sending device, and the redacted form once redacted', async () => {
      const roomId = await createRoom(h, alice.user_id)
      const [sent] = await sendEvents(h, roomId, text(alice.user_id, 'secret', { deviceId: alice.device_id, txnId: 'txn-1' }))
      const url = `/rooms/${enc(roomId)}/event/${enc(sent!.event_id)}`
      const own = (await get(alice, url)).json() as ClientEvent
      expect(own).to.include({ event_id: sent!.event_id, type: 'm.room.message', sender: alice.user_id })
      expect(own.content).to.deep.equal({ msgtype: 'm.text', body: 'secret' })
      expect(own.unsigned['transaction_id']).to.equal('txn-1')
      expect(own.unsigned['age']).to.be.a('number')
      expect(own).to.not.have.any.keys('hashes', 'signatures', 'prev_events', 'auth_events', 'depth')
      const login = await h.call('POST', `${v3}/login`, { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: 'alice' }, password: 'correct horse battery' } })
      const otherDevice = login.json() as Session
      expect(((await get(otherDevice, url)).json() as ClientEvent).unsigned).to.not.have.property('transaction_id')

      const [redaction] = await sendEvents(h, roomId, { type: 'm.room.redaction', sender: alice.user_id, content: { redacts: sent!.event_id } })
      const redacted = (await get(alice, url)).json() as ClientEvent
      expect(redacted.content).to.deep.equal({})
      expect((redacted.unsigned['redacted_because'] as ClientEvent).event_id).to.equal(redaction!.event_id)
    })

    it('should answer 403 to non-members, 404 for unknown events and for events of another room', async () => {
      const roomId = await createRoom(h, alice.user_id)
      const other = await createRoom(h, alice.user_id)
      const [sent] = await sendEvents(h, other, text(alice.user_id, 'elsewhere'))
      expect((await get(carol, `/rooms/${enc(roomId)}/event/${enc(sent!.event_id)}`)).statusCode).to.equal(403)
      const wrongRoom = await get(alice, `/rooms/${enc(roomId)}/event/${enc(sent!.event_id)}`)
      expect([wrongRoom.statusCode, wrongRoom.json().errcode]).to.deep.equal([404, 'M_NOT_FOUND'])
      expect((await get(alice, `/rooms/${enc(roomId)}/event/${enc('$nope')}`)).statusCode).to.equal(404)
    })
  })

  describe('messages', () => {
    it('should paginate back and forth without gaps or duplicates, and omit end at the edge', async () => {
      const roomId = await createRoom(h, alice.user_id)
      for (let i = 0; i < 25; i++) await sendEvents(h, roomId, text(alice.user_id, `m${i}`))
      const seen: ClientEvent[] = []
      let from: string | undefined
      for (let page = 0; page < 10; page++) {
        const res = await get(alice, `/rooms/${enc(roomId)}/messages?dir=b&limit=10${from ? `&from=${enc(from)}` : ''}`)
        expect(res.statusCode).to.equal(200)
        const body = res.json() as { chunk: ClientEvent[]; end?: string; start: string }
        seen.push(...body.chunk)
        if (body.end === undefined) break
        from = body.end
      }
      const ids = seen.map((e) => e.event_id)
      expect(new Set(ids).size).to.equal(ids.length)
      expect(seen.filter((e) => e.type === 'm.room.message').map((e) => e.content['body'])).to.deep.equal(Array.from({ length: 25 }, (_, i) => `m${24 - i}`))
      expect(seen.at(-1)?.type).to.equal('m.room.create')

      const forward: ClientEvent[] = []
      let token: string | undefined
      for (let page = 0; page < 10; page++) {
        const res = await get(alice, `/rooms/${enc(roomId)}/messages?dir=f&limit=7${token ? `&from=${enc(token)}` : ''}`)
        const body = res.json() as { chunk: ClientEvent[]; end?: string }
        forward.push(...body.chunk)
        if (body.end === undefined) break
        token = body.end
      }
      expect(forward.map((e) => e.event_id)).to.deep.equal([...ids].reverse())
    })

    it('should apply a filter, and answer 400 M_INVALID_PARAM to malformed tokens, limits and filters', async () => {
      const roomId = await createRoom(h, alice.user_id)
      await sendEvents(h, roomId, text(alice.user_id, 'one'), { type: 'x.custom', sender: alice.user_id, content: {} }, text(alice.user_id, 'two'))
      const filter = enc(JSON.stringify({ types: ['m.room.message'] }))
      const body = (await get(alice, `/rooms/${enc(roomId)}/messages?dir=b&limit=50&filter=${filter}`)).json() as { chunk: ClientEvent[] }
      expect(bodies(body.chunk)).to.deep.equal(['two', 'one'])
      const notFilter = enc(JSON.stringify({ not_types: ['m.room.*'] }))
      const others = (await get(alice, `/rooms/${enc(roomId)}/messages?dir=b&limit=50&filter=${notFilter}`)).json() as { chunk: ClientEvent[] }
      expect(others.chunk.map((e) => e.type)).to.deep.equal(['x.custom'])
      for (const query of ['from=x12', 'from=t1', 'limit=ten', 'dir=up', `filter=${enc('{"types":"m.room.message"}')}`, 'filter=%7Bbad']) {
        const res = await get(alice, `/rooms/${enc(roomId)}/messages?${query}`)
        expect([query, res.statusCode, res.json().errcode]).to.deep.equal([query, 400, 'M_INVALID_PARAM'])
      }
    })

    it('should clamp a token from the future and answer at once', async () => {
      const roomId = await createRoom(h, alice.user_id)
      await sendEvents(h, roomId, text(alice.user_id, 'latest'))
      const started = Date.now()
      const res = await get(alice, `/rooms/${enc(roomId)}/messages?dir=b&limit=1&from=s900000000000`)
      expect(res.statusCode).to.equal(200)
      expect(bodies(res.json().chunk)).to.deep.equal(['latest'])
      expect(Date.now() - started).to.be.below(4_000)
    })

    it('should form its events as the event API does: redacted with redacted_because, replaced state with prev_content', async () => {
      const roomId = await createRoom(h, alice.user_id)
      const topic = (value: string) => ({ type: 'm.room.topic', state_key: '', sender: alice.user_id, content: { topic: value } })
      const [first, , gone] = await sendEvents(h, roomId, topic('one'), topic('two'), text(alice.user_id, 'regretted'))
      const [redaction] = await sendEvents(h, roomId, { type: 'm.room.redaction', sender: alice.user_id, content: { redacts: gone!.event_id } })
      const chunk = (await get(alice, `/rooms/${enc(roomId)}/messages?dir=b&limit=4`)).json().chunk as ClientEvent[]
      expect(chunk.map((e) => e.event_id)).to.deep.equal([redaction!.event_id, gone!.event_id, chunk[2]!.event_id, first!.event_id])
      expect(chunk[1]!.content).to.deep.equal({})
      expect((chunk[1]!.unsigned['redacted_because'] as ClientEvent).event_id).to.equal(redaction!.event_id)
      expect(chunk[2]!.unsigned).to.include({ replaces_state: first!.event_id })
      expect(chunk[2]!.unsigned['prev_content']).to.deep.equal({ topic: 'one' })
    })

    it('should hide events before the join under history visibility joined, and show them under shared', async () => {
      for (const [value, expected] of [
        ['joined', ['after']],
        ['shared', ['before', 'after']],
      ] as const) {
        const roomId = await createRoom(h, alice.user_id, { joinRule: 'public' })
        await sendEvents(h, roomId, visibility(alice.user_id, value), text(alice.user_id, 'before'))
        await sendEvents(h, roomId, membership(bob.user_id, bob.user_id, 'join'), text(alice.user_id, 'after'))
        const res = await get(bob, `/rooms/${enc(roomId)}/messages?dir=b&limit=50`)
        const chunk = res.json().chunk as ClientEvent[]
        expect(chunk.filter((e) => e.type === 'm.room.message').map((e) => e.content['body']).reverse()).to.deep.equal(expected)
        // The room was created `shared`: its creation stays visible; the change to `value` is visible only under `shared`.
        const changes = chunk.filter((e) => e.type === 'm.room.history_visibility').map((e) => e.content['history_visibility'])
        expect(changes).to.deep.equal(value === 'joined' ? ['shared'] : ['shared', 'shared'])
        expect(chunk.some((e) => e.type === 'm.room.create')).to.equal(true)
      }
    })
  })

  describe('context', () => {
    it('should answer the events around an event with tokens that paginate further', async () => {
      const roomId = await createRoom(h, alice.user_id)
      const sent = []
      for (let i = 0; i < 9; i++) sent.push(...(await sendEvents(h, roomId, text(alice.user_id, `c${i}`))))
      const res = await get(alice, `/rooms/${enc(roomId)}/context/${enc(sent[4]!.event_id)}?limit=4`)
      expect(res.statusCode).to.equal(200)
      const ctx = res.json() as { event: ClientEvent; events_before: ClientEvent[]; events_after: ClientEvent[]; start: string; end: string; state: ClientEvent[] }
      expect(ctx.event.content['body']).to.equal('c4')
      expect(bodies(ctx.events_before)).to.deep.equal(['c3', 'c2'])
      expect(bodies(ctx.events_after)).to.deep.equal(['c5', 'c6'])
      expect(ctx.state.some((e) => e.type === 'm.room.create')).to.equal(true)
      const back = (await get(alice, `/rooms/${enc(roomId)}/messages?dir=b&limit=2&from=${enc(ctx.start)}`)).json() as { chunk: ClientEvent[] }
      expect(bodies(back.chunk)).to.deep.equal(['c1', 'c0'])
      const forward = (await get(alice, `/rooms/${enc(roomId)}/messages?dir=f&limit=2&from=${enc(ctx.end)}`)).json() as { chunk: ClientEvent[] }
      expect(bodies(forward.chunk)).to.deep.equal(['c7', 'c8'])
    })
  })

  describe('members', () => {
    it('should list members now and at a token, filter by membership, and answer joined members and joined rooms', async () => {
      const roomId = await createRoom(h, alice.user_id, { joinRule: 'public', invite: [carol.user_id] })
      const before = (await get(alice, `/rooms/${enc(roomId)}/messages?dir=b&limit=1`)).json() as { start: string }
      await sendEvents(h, roomId, membership(bob.user_id, bob.user_id, 'join', { displayname: 'Bobby', avatar_url: 'mxc://hs.test/b' }))
      const now = (await get(alice, `/rooms/${enc(roomId)}/members`)).json() as { chunk: ClientEvent[] }
      expect(now.chunk.map((e) => `${e.state_key}:${e.content['membership']}`).sort()).to.deep.equal(
        [`${alice.user_id}:join`, `${bob.user_id}:join`, `${carol.user_id}:invite`].sort(),
      )
      const at = (await get(alice, `/rooms/${enc(roomId)}/members?at=${enc(before.start)}`)).json() as { chunk: ClientEvent[] }
      expect(at.chunk.map((e) => e.state_key).sort()).to.deep.equal([alice.user_id, carol.user_id].sort())
      const joinedOnly = (await get(alice, `/rooms/${enc(roomId)}/members?membership=join`)).json() as { chunk: ClientEvent[] }
      expect(joinedOnly.chunk.map((e) => e.state_key).sort()).to.deep.equal([alice.user_id, bob.user_id].sort())
      const notJoined = (await get(alice, `/rooms/${enc(roomId)}/members?not_membership=join`)).json() as { chunk: ClientEvent[] }
      expect(notJoined.chunk.map((e) => e.state_key)).to.deep.equal([carol.user_id])
      expect((await get(alice, `/rooms/${enc(roomId)}/joined_members`)).json()).to.deep.equal({
        joined: { [alice.user_id]: { display_name: null, avatar_url: null }, [bob.user_id]: { display_name: 'Bobby', avatar_url: 'mxc://hs.test/b' } },
      })
      expect((await get(carol, `/rooms/${enc(roomId)}/members`)).statusCode).to.equal(403)
      expect(((await get(bob, '/joined_rooms')).json() as { joined_rooms: string[] }).joined_rooms).to.include(roomId)
      expect(((await get(carol, '/joined_rooms')).json() as { joined_rooms: string[] }).joined_rooms).to.not.include(roomId)
    })
  })
})
