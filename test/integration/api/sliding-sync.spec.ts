import { expect } from 'chai'
import fc from 'fast-check'
import { roomPlugins } from '../../../api/room-plugins.js'
import { startApi, v3, type ApiHarness, type Session } from './api-harness.js'
import { createRoomAs, enc, joinAs, sendTextAs, type ClientEvent } from './read-fixtures.js'

const path = '/_matrix/client/unstable/org.matrix.simplified_msc3575/sync'

interface SlidingRoom {
  initial?: boolean
  expanded_timeline?: boolean
  name?: string
  heroes?: { user_id: string; displayname?: string }[]
  is_dm?: boolean
  required_state?: ClientEvent[]
  timeline?: ClientEvent[]
  invite_state?: ClientEvent[]
  limited?: boolean
  num_live?: number
  prev_batch?: string
  bump_stamp: number
  joined_count?: number
  invited_count?: number
  notification_count?: number
}
interface SlidingBody {
  pos: string
  lists: Record<string, { count: number }>
  rooms: Record<string, SlidingRoom>
  extensions: Record<string, Record<string, unknown>>
}

describe('api simplified sliding sync (MSC4186)', function () {
  this.timeout(120_000)
  let h: ApiHarness
  before(async () => {
    h = await startApi({ roomRoutes: (services) => roomPlugins(services) })
  })
  after(() => h.close())

  const slide = async (session: Session, body: Record<string, unknown>, query: { pos?: string; timeout?: number } = {}) => {
    const qs = [query.pos !== undefined && `pos=${enc(query.pos)}`, `timeout=${query.timeout ?? 0}`].filter(Boolean).join('&')
    return h.call('POST', `${path}?${qs}`, { token: session.access_token, body })
  }
  const ok = async (session: Session, body: Record<string, unknown>, query: { pos?: string; timeout?: number } = {}) => {
    const res = await slide(session, body, query)
    expect(res.statusCode, res.body).to.equal(200)
    return res.json<SlidingBody>()
  }
  const texts = (room: SlidingRoom | undefined) => (room?.timeline ?? []).filter((e) => e.type === 'm.room.message').map((e) => e.content['body'])

  it('should list rooms by their latest message, send those in range afresh, then only their news', async () => {
    const alice = await h.register('alice')
    const [a, b, c] = [await createRoomAs(h, alice, { name: 'A' }), await createRoomAs(h, alice, { name: 'B' }), await createRoomAs(h, alice, { name: 'C' })]
    await sendTextAs(h, alice, b, 'b1')
    await sendTextAs(h, alice, a, 'a1')
    await sendTextAs(h, alice, c, 'c1')
    await sendTextAs(h, alice, c, 'c2')
    const request = { lists: { all: { ranges: [[0, 1]], timeline_limit: 2, required_state: [['m.room.create', ''], ['m.room.member', '$ME']] } } }

    const first = await ok(alice, request)
    expect(first.lists).to.deep.equal({ all: { count: 3 } })
    expect(Object.keys(first.rooms).sort()).to.deep.equal([a, c].sort())
    const rc = first.rooms[c]!
    expect([rc.initial, rc.name, rc.joined_count, rc.invited_count, rc.limited, rc.num_live]).to.deep.equal([true, 'C', 1, 0, true, 0])
    expect(texts(rc)).to.deep.equal(['c1', 'c2'])
    expect(rc.required_state!.map((e) => [e.type, e.state_key]).sort()).to.deep.equal([['m.room.create', ''], ['m.room.member', alice.user_id]])
    expect(rc.bump_stamp).to.be.greaterThan(first.rooms[a]!.bump_stamp)
    expect(rc.prev_batch).to.be.a('string')

    // Nothing new: an empty answer at once (timeout 0), with a new pos.
    const quiet = await ok(alice, request, { pos: first.pos })
    expect([quiet.rooms, quiet.lists]).to.deep.equal([{}, { all: { count: 3 } }])
    expect(quiet.pos).to.not.equal(first.pos)

    // B moves to the top: it comes afresh; C, still in range and unchanged, does not; A left the range.
    await sendTextAs(h, alice, b, 'b2')
    const moved = await ok(alice, request, { pos: quiet.pos })
    expect(Object.keys(moved.rooms)).to.deep.equal([b])
    expect([moved.rooms[b]!.initial, texts(moved.rooms[b])]).to.deep.equal([true, ['b1', 'b2']])

    // News in a room the client holds: only the new event, live.
    await sendTextAs(h, alice, c, 'c3')
    const news = await ok(alice, request, { pos: moved.pos })
    expect(Object.keys(news.rooms)).to.deep.equal([c])
    expect([news.rooms[c]!.initial, news.rooms[c]!.num_live, news.rooms[c]!.limited, texts(news.rooms[c])]).to.deep.equal([undefined, 1, false, ['c3']])
    expect(news.rooms[c]!.required_state).to.deep.equal([])

    // A long-poll wakes when news arrives.
    const waiting = ok(alice, request, { pos: news.pos, timeout: 20_000 })
    await new Promise((resolve) => setTimeout(resolve, 200))
    await sendTextAs(h, alice, b, 'b3')
    const woken = await waiting
    expect(texts(woken.rooms[b])).to.deep.equal(['b3'])

    // A retry from an earlier pos is answered again from there (and the answer it replaces is
    // forgotten); an unknown one is refused.
    const retried = await ok(alice, request, { pos: news.pos })
    expect(texts(retried.rooms[b])).to.deep.equal(['b3'])
    expect((await slide(alice, request, { pos: woken.pos })).json().errcode).to.equal('M_UNKNOWN_POS')
    const unknown = await slide(alice, request, { pos: 'nonsense' })
    expect([unknown.statusCode, unknown.json().errcode]).to.deep.equal([400, 'M_UNKNOWN_POS'])
    // The process counts the connections it remembers.
    expect(await h.metrics.getSingleMetricAsString('myelin_sliding_sync_connections')).to.match(/^myelin_sliding_sync_connections [1-9]/m)
    // Another connection of the same device does not share its positions.
    const other = await slide(alice, { ...request, conn_id: 'other' }, { pos: retried.pos })
    expect(other.json().errcode).to.equal('M_UNKNOWN_POS')

    // Subscribing to a room out of range sends it; so does a larger timeline (afresh).
    const subscribed = await ok(alice, { ...request, room_subscriptions: { [a]: { timeline_limit: 1 } } }, { pos: retried.pos })
    expect(Object.keys(subscribed.rooms)).to.deep.equal([a])
    expect([subscribed.rooms[a]!.initial, texts(subscribed.rooms[a])]).to.deep.equal([true, ['a1']])
    // The subscription lasts (news in A comes without naming it again) until unsubscribed; a
    // list of invites only keeps A out of every range meanwhile.
    const invitesOnly = { lists: { invites: { ranges: [[0, 9]], filters: { is_invite: true } } } }
    await sendTextAs(h, alice, a, 'a2')
    const sticky = await ok(alice, invitesOnly, { pos: subscribed.pos })
    expect([Object.keys(sticky.rooms), sticky.rooms[a]!.initial, texts(sticky.rooms[a])]).to.deep.equal([[a], undefined, ['a2']])
    const unsubscribed = await ok(alice, { ...invitesOnly, unsubscribe_rooms: [a] }, { pos: sticky.pos })
    await sendTextAs(h, alice, a, 'a3')
    expect((await ok(alice, invitesOnly, { pos: unsubscribed.pos })).rooms).to.deep.equal({})
  })

  it("should send the state at the end of the timeline, then the state changes, the timeline's included", async () => {
    const jan = await h.register('jan')
    const roomId = await createRoomAs(h, jan, { name: 'Before' })
    const request = { lists: { all: { ranges: [[0, 0]], timeline_limit: 1, required_state: [['m.room.name', ''], ['m.room.topic', '']] } } }
    const first = await ok(jan, request)
    const state = (room: SlidingRoom | undefined) => (room?.required_state ?? []).map((e) => [e.type, e.content['name'] ?? e.content['topic']])
    // The name event is older than the one-event timeline: it comes in required_state.
    expect(state(first.rooms[roomId])).to.deep.equal([['m.room.name', 'Before']])
    const rename = await h.call('PUT', `${v3}/rooms/${enc(roomId)}/state/m.room.name/`, { token: jan.access_token, body: { name: 'After' } })
    expect(rename.statusCode).to.equal(200)
    await sendTextAs(h, jan, roomId, 'after the rename')
    const next = await ok(jan, request, { pos: first.pos })
    // The rename fell out of the limited timeline; it comes as a state change all the same.
    expect([texts(next.rooms[roomId]), next.rooms[roomId]!.limited, state(next.rooms[roomId])]).to.deep.equal([['after the rename'], true, [['m.room.name', 'After']]])
    await h.call('PUT', `${v3}/rooms/${enc(roomId)}/state/m.room.topic/`, { token: jan.access_token, body: { topic: 'Topic' } })
    const topic = await ok(jan, request, { pos: next.pos })
    expect(topic.rooms[roomId]!.timeline!.map((e) => e.type)).to.deep.equal(['m.room.topic'])
    expect(state(topic.rooms[roomId])).to.deep.equal([['m.room.topic', 'Topic']])
  })

  it('should show invites, DMs and heroes, filter lists by them, and send a leave once', async () => {
    const dana = await h.register('dana')
    const erin = await h.register('erin')
    await h.call('PUT', `${v3}/profile/${enc(erin.user_id)}/displayname`, { token: erin.access_token, body: { displayname: 'Erin' } })
    const dm = await createRoomAs(h, erin, { invite: [dana.user_id], is_direct: true })
    const group = await createRoomAs(h, dana, { name: 'Group' })
    const lists = {
      invites: { ranges: [[0, 9]], filters: { is_invite: true }, timeline_limit: 1 },
      rooms: { ranges: [[0, 9]], filters: { is_invite: false }, timeline_limit: 1 },
    }
    const first = await ok(dana, { lists })
    expect(first.lists).to.deep.equal({ invites: { count: 1 }, rooms: { count: 1 } })
    const invite = first.rooms[dm]!
    expect(invite.initial).to.equal(true)
    expect(invite.invite_state!.map((e) => e.type)).to.include.members(['m.room.create', 'm.room.member'])
    expect(invite.timeline).to.equal(undefined)

    // Joined, the DM comes afresh as a room (with erin as its hero), and counts as a DM once m.direct says so.
    await joinAs(h, dana, dm)
    await h.call('PUT', `${v3}/user/${enc(dana.user_id)}/account_data/m.direct`, { token: dana.access_token, body: { [erin.user_id]: [dm] } })
    const joined = await ok(dana, { lists: { ...lists, dms: { ranges: [[0, 9]], filters: { is_dm: true }, timeline_limit: 1 } } }, { pos: first.pos })
    expect(joined.lists).to.deep.equal({ invites: { count: 0 }, rooms: { count: 2 }, dms: { count: 1 } })
    const room = joined.rooms[dm]!
    expect([room.initial, room.is_dm, room.name, room.joined_count]).to.deep.equal([true, true, undefined, 2])
    expect(room.heroes).to.deep.equal([{ user_id: erin.user_id, displayname: 'Erin' }])

    // Leaving: the room comes once more with the leave, then it is gone from the lists.
    const leave = await h.call('POST', `${v3}/rooms/${enc(group)}/leave`, { token: dana.access_token, body: {} })
    expect(leave.statusCode).to.equal(200)
    const left = await ok(dana, { lists }, { pos: joined.pos })
    expect(left.lists).to.deep.equal({ invites: { count: 0 }, rooms: { count: 1 } })
    const last = left.rooms[group]!.timeline!.at(-1)!
    expect([last.type, last.state_key, last.content['membership']]).to.deep.equal(['m.room.member', dana.user_id, 'leave'])
    const after = await ok(dana, { lists }, { pos: left.pos })
    expect(after.rooms).to.deep.equal({})
  })

  it('should resend a room afresh when its configuration grows, and not when it shrinks', async () => {
    const lou = await h.register('lou')
    const roomId = await createRoomAs(h, lou, { name: 'Config' })
    for (let i = 0; i < 6; i++) await sendTextAs(h, lou, roomId, `m${i}`)
    const list = { all: { ranges: [[0, 0]], timeline_limit: 1 } }
    const subscription = (limit: number, ...more: string[][]) => ({ [roomId]: { timeline_limit: limit, required_state: [['m.room.name', ''], ...more] } })
    const first = await ok(lou, { lists: list, room_subscriptions: subscription(5) })
    expect([first.rooms[roomId]!.initial, texts(first.rooms[roomId]).length, first.rooms[roomId]!.required_state!.length]).to.deep.equal([true, 5, 1])
    // The subscription ends: the room is now asked for with less; nothing to resend.
    const shrunk = await ok(lou, { lists: list, unsubscribe_rooms: [roomId] }, { pos: first.pos })
    expect(shrunk.rooms).to.deep.equal({})
    await sendTextAs(h, lou, roomId, 'm6')
    const news = await ok(lou, { lists: list }, { pos: shrunk.pos })
    expect([news.rooms[roomId]!.initial, texts(news.rooms[roomId])]).to.deep.equal([undefined, ['m6']])
    // Subscribed again as before: the client has had that much all along.
    const again = await ok(lou, { lists: list, room_subscriptions: subscription(5) }, { pos: news.pos })
    expect(again.rooms).to.deep.equal({})
    // Asked for a longer timeline than it ever had: the timeline expanded, nothing new.
    const grown = await ok(lou, { lists: list, room_subscriptions: subscription(10) }, { pos: again.pos })
    const g = grown.rooms[roomId]!
    expect([g.initial, g.expanded_timeline, texts(g), g.num_live, g.limited, g.required_state]).to.deep.equal([undefined, true, ['m0', 'm1', 'm2', 'm3', 'm4', 'm5', 'm6'], 0, true, []])
    // Expanded again with news: the news are the last `num_live` of the timeline.
    await sendTextAs(h, lou, roomId, 'm7')
    await h.call('PUT', `${v3}/rooms/${enc(roomId)}/state/m.room.name/`, { token: lou.access_token, body: { name: 'Renamed' } })
    const longer = await ok(lou, { lists: list, room_subscriptions: subscription(30) }, { pos: grown.pos })
    const l = longer.rooms[roomId]!
    expect([l.initial, l.expanded_timeline, texts(l).length, l.num_live, l.limited]).to.deep.equal([undefined, true, 8, 2, false])
    expect(l.timeline!.slice(-2).map((e) => e.content['body'] ?? e.content['name'])).to.deep.equal(['m7', 'Renamed'])
    expect(l.required_state!.map((e) => e.content['name'])).to.deep.equal(['Renamed'])
    // Once expanded, that timeline is what the client holds: news come as news.
    await sendTextAs(h, lou, roomId, 'm8')
    const after = await ok(lou, { lists: list, room_subscriptions: subscription(30) }, { pos: longer.pos })
    expect([after.rooms[roomId]!.expanded_timeline, after.rooms[roomId]!.num_live, texts(after.rooms[roomId])]).to.deep.equal([undefined, 1, ['m8']])
    // Asked for state it was not sent: afresh.
    const more = await ok(lou, { lists: list, room_subscriptions: subscription(30, ['m.room.topic', '']) }, { pos: after.pos })
    expect([more.rooms[roomId]!.initial, more.rooms[roomId]!.expanded_timeline, texts(more.rooms[roomId]).length]).to.deep.equal([true, undefined, 9])
  })

  it('should send a lazy member once per connection, whatever its age, then only its changes', async () => {
    const [ann, bob] = [await h.register('lazyann'), await h.register('lazybob')]
    const roomId = await createRoomAs(h, ann, { name: 'Lazy', preset: 'public_chat' })
    await joinAs(h, bob, roomId)
    await sendTextAs(h, bob, roomId, 'b1')
    const request = { lists: { all: { ranges: [[0, 0]], timeline_limit: 1, required_state: [['m.room.member', '$LAZY']] } } }
    const members = (body: SlidingBody) => (body.rooms[roomId]?.required_state ?? []).map((e) => [e.state_key, e.content['displayname'] ?? null])
    const first = await ok(ann, request)
    expect([texts(first.rooms[roomId]), members(first)]).to.deep.equal([['b1'], [[bob.user_id, 'lazybob']]])
    // Bob's member event is held: not sent again.
    await sendTextAs(h, bob, roomId, 'b2')
    const second = await ok(ann, request, { pos: first.pos })
    expect([texts(second.rooms[roomId]), members(second)]).to.deep.equal([['b2'], []])
    // Ann speaks: her member event is older than the last response, and comes all the same.
    await sendTextAs(h, ann, roomId, 'a1')
    const third = await ok(ann, request, { pos: second.pos })
    expect([texts(third.rooms[roomId]), members(third)]).to.deep.equal([['a1'], [[ann.user_id, 'lazyann']]])
    // Bob renames himself without speaking: a change of a member the client holds comes.
    const rename = await h.call('PUT', `${v3}/rooms/${enc(roomId)}/state/m.room.member/${enc(bob.user_id)}`, { token: bob.access_token, body: { membership: 'join', displayname: 'Bobby' } })
    expect(rename.statusCode, rename.body).to.equal(200)
    await sendTextAs(h, ann, roomId, 'a2')
    const fourth = await ok(ann, request, { pos: third.pos })
    expect([texts(fourth.rooms[roomId]), members(fourth)]).to.deep.equal([['a2'], [[bob.user_id, 'Bobby']]])
    // A new connection holds nothing.
    const fresh = await ok(ann, { ...request, conn_id: 'other' })
    expect(members(fresh)).to.deep.equal([[ann.user_id, 'lazyann']])
  })

  it('should filter lists by space, by tag and by room type', async () => {
    const kim = await h.register('kim')
    const space = await createRoomAs(h, kim, { name: 'Space', creation_content: { type: 'm.space' } })
    const [inSpace, tagged, plain] = [await createRoomAs(h, kim, { name: 'in space' }), await createRoomAs(h, kim, { name: 'tagged' }), await createRoomAs(h, kim, { name: 'plain' })]
    const child = await h.call('PUT', `${v3}/rooms/${enc(space)}/state/m.space.child/${enc(inSpace)}`, { token: kim.access_token, body: { via: ['hs.test'] } })
    expect(child.statusCode).to.equal(200)
    // A child event without `via` names no child.
    await h.call('PUT', `${v3}/rooms/${enc(space)}/state/m.space.child/${enc(plain)}`, { token: kim.access_token, body: {} })
    const tag = await h.call('PUT', `${v3}/user/${enc(kim.user_id)}/rooms/${enc(tagged)}/tags/m.favourite`, { token: kim.access_token, body: { order: 0.5 } })
    expect(tag.statusCode).to.equal(200)
    const list = (filters: Record<string, unknown>) => ({ ranges: [[0, 9]], timeline_limit: 0, filters })
    const body = await ok(kim, {
      lists: {
        space: list({ spaces: [space] }),
        favourites: list({ tags: ['m.favourite'] }),
        others: list({ not_tags: ['m.favourite'], not_room_types: ['m.space'] }),
        spaces: list({ room_types: ['m.space'] }),
        unknownSpace: list({ spaces: ['!nowhere:hs.test'] }),
      },
    })
    expect(body.lists).to.deep.equal({ space: { count: 1 }, favourites: { count: 1 }, others: { count: 2 }, spaces: { count: 1 }, unknownSpace: { count: 0 } })
    expect(Object.keys(body.rooms).sort()).to.deep.equal([space, inSpace, tagged, plain].sort())
  })

  it('should carry to-device messages until acknowledged, account data, receipts, typing and key counts in its extensions', async () => {
    const fay = await h.register('fay')
    const gus = await h.register('gus')
    const roomId = await createRoomAs(h, fay, { invite: [gus.user_id] })
    await joinAs(h, gus, roomId)
    const eventId = await sendTextAs(h, gus, roomId, 'hello')
    const extensions = { to_device: { enabled: true }, e2ee: { enabled: true }, account_data: { enabled: true }, receipts: { enabled: true }, typing: { enabled: true } }
    const request = { lists: { all: { ranges: [[0, 9]], timeline_limit: 5 } }, extensions }
    await h.call('PUT', `${v3}/sendToDevice/m.test/t1`, { token: gus.access_token, body: { messages: { [fay.user_id]: { [fay.device_id]: { n: 1 } } } } })
    await h.call('PUT', `${v3}/user/${enc(fay.user_id)}/account_data/m.test.global`, { token: fay.access_token, body: { x: 1 } })

    const first = await ok(fay, request)
    const toDevice = first.extensions['to_device'] as { next_batch: string; events: { type: string; content: unknown }[] }
    expect(toDevice.events).to.deep.equal([{ type: 'm.test', sender: gus.user_id, content: { n: 1 } }])
    expect((first.extensions['account_data']!['global'] as { type: string }[]).map((e) => e.type)).to.include('m.test.global')
    expect(first.extensions['e2ee']).to.deep.include({ device_one_time_keys_count: { signed_curve25519: 0 }, device_unused_fallback_key_types: [] })

    // Not acknowledged: sent again. Acknowledged: gone.
    const again = await ok(fay, request, { pos: first.pos })
    expect((again.extensions['to_device']!['events'] as unknown[]).length).to.equal(1)
    const acked = await ok(fay, { ...request, extensions: { ...extensions, to_device: { enabled: true, since: toDevice.next_batch } } }, { pos: again.pos })
    expect(acked.extensions['to_device']!['events']).to.deep.equal([])

    // A receipt and typing in the room show in their extensions.
    await h.call('POST', `${v3}/rooms/${enc(roomId)}/receipt/m.read/${enc(eventId)}`, { token: gus.access_token, body: {} })
    await h.call('PUT', `${v3}/rooms/${enc(roomId)}/typing/${enc(gus.user_id)}`, { token: gus.access_token, body: { typing: true, timeout: 30_000 } })
    const ephemeral = await ok(fay, request, { pos: acked.pos })
    const receipt = (ephemeral.extensions['receipts']!['rooms'] as Record<string, { type: string; content: Record<string, unknown> }>)[roomId]
    expect(receipt?.type).to.equal('m.receipt')
    expect(Object.keys(receipt!.content)).to.deep.equal([eventId])
    expect((ephemeral.extensions['typing']!['rooms'] as Record<string, unknown>)[roomId]).to.deep.equal({ type: 'm.typing', content: { user_ids: [gus.user_id] } })
  })

  it('should deliver every event of the rooms in range exactly once across responses', async () => {
    const hal = await h.register('hal')
    const rooms = [await createRoomAs(h, hal), await createRoomAs(h, hal), await createRoomAs(h, hal)]
    let n = 0
    await fc.assert(
      fc.asyncProperty(fc.array(fc.array(fc.integer({ min: 0, max: 2 }), { maxLength: 4 }), { minLength: 1, maxLength: 4 }), async (rounds) => {
        const request = { conn_id: `p${n++}`, lists: { all: { ranges: [[0, 2]], timeline_limit: 50 } } }
        let body = await ok(hal, request)
        const seen: string[] = []
        const collect = (b: SlidingBody) => {
          for (const room of Object.values(b.rooms)) for (const e of room.timeline ?? []) if (e.type === 'm.room.message') seen.push(e.event_id)
        }
        collect(body)
        const before = seen.length
        const sent: string[] = []
        for (const round of rounds) {
          for (const r of round) sent.push(await sendTextAs(h, hal, rooms[r]!, `m${sent.length}`))
          body = await ok(hal, request, { pos: body.pos })
          collect(body)
        }
        expect(seen.slice(before).sort()).to.deep.equal([...sent].sort())
        expect(new Set(seen).size).to.equal(seen.length)
      }),
      { numRuns: 8 },
    )
  })

  it('should refuse what it must with Matrix errors', async () => {
    const ivy = await h.register('ivy')
    const status = (res: { statusCode: number; json: () => { errcode?: string } }) => [res.statusCode, res.json().errcode]
    expect(status(await h.call('POST', `${path}`, { body: {} }))).to.deep.equal([401, 'M_MISSING_TOKEN'])
    for (const body of [{ lists: { x: { ranges: 'all' } } }, { lists: { x: { ranges: [[0]] } } }, { lists: { x: { timeline_limit: -1 } } }, { extensions: { to_device: { since: 'abc' } } }, { room_subscriptions: { '!r:hs': { required_state: [['a']] } } }]) {
      const res = await slide(ivy, body)
      expect(res.statusCode, JSON.stringify(body)).to.equal(400)
      expect(res.json().errcode).to.be.a('string')
    }
    expect((await h.call('POST', `${path}?timeout=soon`, { token: ivy.access_token, body: {} })).statusCode).to.equal(400)
    expect((await h.call('POST', `${path}?set_presence=away`, { token: ivy.access_token, body: {} })).statusCode).to.equal(400)
    // Syncing marks the user online, unless the client says otherwise.
    await ok(ivy, {})
    const presence = await h.call('GET', `${v3}/presence/${enc(ivy.user_id)}/status`, { token: ivy.access_token })
    expect(presence.json().presence).to.equal('online')
    // A subscription to a room the user is not in is ignored.
    const res = await ok(ivy, { room_subscriptions: { '!elsewhere:hs.test': { timeline_limit: 1 } } })
    expect(res.rooms).to.deep.equal({})
  })

  it('should let a connection go on from its pos on the worker that serves it after a restart', async () => {
    const first = await startApi({ roomRoutes: (services) => roomPlugins(services) })
    let second: ApiHarness | undefined
    try {
      const at = (harness: ApiHarness) => async (session: Session, body: Record<string, unknown>, pos?: string) =>
        harness.call('POST', `${path}?timeout=0${pos === undefined ? '' : `&pos=${enc(pos)}`}`, { token: session.access_token, body })
      const bob = await first.register('bob')
      const room = await createRoomAs(first, bob, { name: 'R' })
      await sendTextAs(first, bob, room, 'r1')
      const request = { lists: { all: { ranges: [[0, 9]], timeline_limit: 5 } } }
      const earlier = (await at(first)(bob, request)).json<SlidingBody>()
      const held = (await at(first)(bob, request, earlier.pos)).json<SlidingBody>()
      const other = (await at(first)(bob, { ...request, conn_id: 'other' })).json<SlidingBody>()
      // The first worker shuts down (saving its connections); another takes over the database.
      await first.process!.close()
      second = await startApi({ roomRoutes: (services) => roomPlugins(services), database: first.t })
      const slide = at(second)
      await sendTextAs(second, bob, room, 'r2')
      // Both positions the connection kept are known; concurrent requests share one take.
      const [news, retry] = await Promise.all([slide(bob, request, held.pos), slide(bob, request, earlier.pos)])
      expect([news.statusCode, retry.statusCode], news.body).to.deep.equal([200, 200])
      const newsRoom = news.json<SlidingBody>().rooms[room]!
      expect([newsRoom.initial, texts(newsRoom)]).to.deep.equal([undefined, ['r2']])
      expect(retry.json<SlidingBody>().rooms[room]?.initial).to.equal(undefined)
      expect(second.logs.some((line) => line.includes('sliding sync connections saved'))).to.equal(false)
      expect(first.logs.some((line) => /"connections":2.*sliding sync connections saved/.test(line))).to.equal(true)
      // A saved connection idle for longer than a connection lives is not taken.
      await first.t.db.updateTable('sliding_sync_connections').set((eb) => ({ touched_ts: eb('touched_ts', '-', BigInt(31 * 60_000)) })).execute()
      const stale = await slide(bob, { ...request, conn_id: 'other' }, other.pos)
      expect([stale.statusCode, stale.json().errcode]).to.deep.equal([400, 'M_UNKNOWN_POS'])
      expect(await first.t.db.selectFrom('sliding_sync_connections').select('conn_key').execute()).to.deep.equal([])
      // A saved connection that cannot be read is a fresh start for its client, not an error.
      await first.t.db.insertInto('sliding_sync_connections').values({ conn_key: `${bob.user_id}|${bob.device_id}|broken`, state: '{not json', touched_ts: Date.now() }).execute()
      const broken = await slide(bob, { ...request, conn_id: 'broken' }, 'some-pos')
      expect([broken.statusCode, broken.json().errcode]).to.deep.equal([400, 'M_UNKNOWN_POS'])
    } finally {
      await second?.close()
      await first.close()
    }
  })
})
