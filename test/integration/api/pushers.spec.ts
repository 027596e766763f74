import { expect } from 'chai'
import { pino } from 'pino'
import { startPushSender } from '../../../api/push-sender.js'
import { defaultIpRangeBlocklist } from '../../../storage/config.js'
import { storedPushers } from '../../../storage/pushers.js'
import { countingQueries } from '../../support/db.js'
import { startGateway } from '../../support/push-gateway.js'
import { roomReadRoutes } from '../../../api/routes/room-reads.js'
import { roomWriteRoutes } from '../../../api/routes/rooms.js'
import { syncRoutes } from '../../../api/routes/sync.js'
import { eventually } from '../reliability/load.js'
import { startApi, v3, type ApiHarness, type Session } from './api-harness.js'
import { createSharedRoom, enc, sendEvents, text } from './read-fixtures.js'

describe('api pushers and push notifications', function () {
  this.timeout(120_000)
  let h: ApiHarness
  let alice: Session
  let bob: Session
  let carol: Session
  let gateway: Awaited<ReturnType<typeof startGateway>>
  /** The room of the ordering test and its last event: bob's first room with unread notifications. */
  let firstRoom: { roomId: string; lastEventId: string } | undefined
  before(async () => {
    h = await startApi({
      // The gateway is on loopback, which the default ip_range_blocklist refuses (tested last).
      config: { push: { retry_initial_ms: 50, retry_max_ms: 200, timeout_ms: 2000, ip_range_blocklist: [] } },
      roomRoutes: (services) => [roomReadRoutes(services), roomWriteRoutes(services), syncRoutes(services)],
    })
    alice = await h.register('alice')
    bob = await h.register('bob')
    carol = await h.register('carol')
    gateway = await startGateway()
  })
  after(async () => {
    await h.close()
    await gateway.close()
  })
  beforeEach(() => {
    gateway.received.length = 0
    gateway.attempts = 0
    gateway.answer = () => [200, { rejected: [] }]
    gateway.delayMs = 0
  })

  const pusher = (pushkey: string, extra: Record<string, unknown> = {}) => ({
    kind: 'http',
    app_id: 'org.example.app',
    pushkey,
    app_display_name: 'Example',
    device_display_name: 'Phone',
    lang: 'en',
    data: { url: gateway.url, extra: 'kept' },
    ...extra,
  })
  const setPusher = (session: Session, body: Record<string, unknown>) => h.call('POST', `${v3}/pushers/set`, { token: session.access_token, body })
  const pushers = async (session: Session) => (await h.call('GET', `${v3}/pushers`, { token: session.access_token })).json<{ pushers: Record<string, unknown>[] }>().pushers
  const removeAll = async (session: Session) => {
    for (const p of await pushers(session)) expect((await setPusher(session, { kind: null, app_id: p['app_id'], pushkey: p['pushkey'] })).statusCode).to.equal(200)
  }
  const flush = () => h.process!.pushSender!.runOnce()

  it('should set, list, replace and delete pushers, and refuse bad ones with a Matrix error', async () => {
    expect((await setPusher(bob, pusher('bob-key', { profile_tag: 'tag' }))).statusCode).to.equal(200)
    expect(await pushers(bob)).to.deep.equal([
      { kind: 'http', app_id: 'org.example.app', pushkey: 'bob-key', app_display_name: 'Example', device_display_name: 'Phone', profile_tag: 'tag', lang: 'en', data: { url: gateway.url, extra: 'kept' } },
    ])
    // Updating keeps one pusher.
    expect((await setPusher(bob, pusher('bob-key', { device_display_name: 'Tablet' }))).statusCode).to.equal(200)
    expect((await pushers(bob)).map((p) => p['device_display_name'])).to.deep.equal(['Tablet'])
    // The same pushkey set by alice: bob's goes, unless she appends.
    expect((await setPusher(alice, pusher('bob-key', { append: true }))).statusCode).to.equal(200)
    expect(await pushers(bob)).to.have.length(1)
    expect((await setPusher(alice, pusher('bob-key'))).statusCode).to.equal(200)
    expect(await pushers(bob)).to.deep.equal([])
    expect((await setPusher(alice, { kind: null, app_id: 'org.example.app', pushkey: 'bob-key' })).statusCode).to.equal(200)
    expect(await pushers(alice)).to.deep.equal([])

    const cases: [string, Record<string, unknown> | undefined, number, string][] = [
      ['no display names', { kind: 'http', app_id: 'a', pushkey: 'k', lang: 'en', data: { url: gateway.url } }, 400, 'M_MISSING_PARAM'],
      ['no url', pusher('k', { data: {} }), 400, 'M_MISSING_PARAM'],
      ['email', pusher('k', { kind: 'email' }), 400, 'M_INVALID_PARAM'],
      ['another path', pusher('k', { data: { url: 'https://push.example.org/notify' } }), 400, 'M_INVALID_PARAM'],
      ['not a url', pusher('k', { data: { url: 'push gateway' } }), 400, 'M_INVALID_PARAM'],
      ['ftp', pusher('k', { data: { url: 'ftp://push.example.org/_matrix/push/v1/notify' } }), 400, 'M_INVALID_PARAM'],
      ['long app_id', pusher('k', { app_id: 'a'.repeat(65) }), 400, 'M_BAD_JSON'],
      ['long pushkey in bytes', pusher('é'.repeat(300)), 400, 'M_INVALID_PARAM'],
      ['no kind', { app_id: 'a', pushkey: 'k' }, 400, 'M_BAD_JSON'],
      ['no body', undefined, 400, 'M_NOT_JSON'],
    ]
    for (const [name, body, status, errcode] of cases) {
      const res = await h.call('POST', `${v3}/pushers/set`, { token: bob.access_token, ...(body !== undefined && { body }) })
      expect([name, res.statusCode, res.json<{ errcode: string }>().errcode]).to.deep.equal([name, status, errcode])
    }
    expect((await h.call('GET', `${v3}/pushers`)).statusCode).to.equal(401)
    expect(await pushers(bob)).to.deep.equal([])
  })

  it('should delete a pusher with the access token that set it (logout)', async () => {
    const phone = await h.call('POST', `${v3}/login`, { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: 'bob' }, password: 'correct horse battery' } })
    const phoneSession = phone.json<Session>()
    expect((await setPusher(phoneSession, pusher('phone-key'))).statusCode).to.equal(200)
    expect((await setPusher(bob, pusher('desk-key'))).statusCode).to.equal(200)
    expect((await h.call('POST', `${v3}/logout`, { token: phoneSession.access_token, body: {} })).statusCode).to.equal(200)
    expect((await pushers(bob)).map((p) => p['pushkey'])).to.deep.equal(['desk-key'])
    await removeAll(bob)
  })

  it('should push what notifies the user, once each and in order, with the tweaks of the rule', async () => {
    // Three members: plain messages follow .m.rule.message (no sound), not the one-to-one rule.
    const roomId = await createSharedRoom(h, alice, bob, carol)
    await sendEvents(h, roomId, { type: 'm.room.name', state_key: '', sender: alice.user_id, content: { name: 'Tea party' } })
    await sendEvents(h, roomId, { type: 'm.room.member', state_key: alice.user_id, sender: alice.user_id, content: { membership: 'join', displayname: 'Alice' } })
    expect((await setPusher(bob, pusher('bob-key'))).statusCode).to.equal(200)
    const sent = await sendEvents(
      h,
      roomId,
      text(alice.user_id, 'one'),
      { type: 'm.room.message', sender: alice.user_id, content: { msgtype: 'm.notice', body: 'a notice' } },
      text(bob.user_id, 'my own'),
      { type: 'm.room.message', sender: alice.user_id, content: { msgtype: 'm.text', body: 'hey bob' } },
      text(alice.user_id, 'three'),
    )
    await eventually('the gateway receives 3 notifications', async () => {
      await flush()
      return gateway.received.length >= 3
    })
    await flush()
    expect(gateway.received.map((n) => n.event_id)).to.deep.equal([sent[0]!.event_id, sent[3]!.event_id, sent[4]!.event_id])
    // The badge: bob's rooms with unread notifications, this one.
    expect(gateway.received.map((n) => n.counts)).to.deep.equal([{ unread: 1 }, { unread: 1 }, { unread: 1 }])
    firstRoom = { roomId, lastEventId: sent[4]!.event_id }
    const [plain, mention] = gateway.received
    expect(plain).to.deep.include({ room_id: roomId, type: 'm.room.message', sender: alice.user_id, sender_display_name: 'Alice', room_name: 'Tea party', prio: 'low' })
    expect(plain!.content).to.deep.equal({ msgtype: 'm.text', body: 'one' })
    expect(plain!.devices).to.have.length(1)
    expect(plain!.devices[0]).to.deep.include({ app_id: 'org.example.app', pushkey: 'bob-key', data: { extra: 'kept' }, tweaks: {} })
    // bob's localpart is a word of the body: highlight and sound, high priority.
    expect([mention!.prio, mention!.devices[0]!.tweaks]).to.deep.equal(['high', { sound: 'default', highlight: true }])
    // Nothing more, even when asked again, or by a sender started afresh (a restart) from the stored positions.
    await flush()
    const restarted = startPushSender({ db: h.t.db, tracker: h.process!.services!.tracker, log: pino({ level: 'silent' }), config: h.config.push })
    await restarted.runOnce()
    await restarted.close()
    expect(gateway.received).to.have.length(3)
    await removeAll(bob)
  })

  it('should retry a failing gateway until it takes the notification, then go on without repeats; drop a rejected pushkey', async () => {
    const roomId = await createSharedRoom(h, alice, bob)
    expect((await setPusher(bob, pusher('bob-key', { data: { url: gateway.url, format: 'event_id_only' } }))).statusCode).to.equal(200)
    let failures = 3
    gateway.answer = () => (failures-- > 0 ? [503, {}] : [200, { rejected: [] }])
    const sent = await sendEvents(h, roomId, text(alice.user_id, 'a'), text(alice.user_id, 'b'))
    await eventually('both notifications arrive after the failures', async () => {
      await flush()
      return gateway.received.length >= 2
    })
    expect(gateway.received.map((n) => n.event_id)).to.deep.equal(sent.map((e) => e.event_id))
    expect(gateway.attempts).to.equal(5)
    // event_id_only: no content, sender or type.
    expect(Object.keys(gateway.received[0]!).sort()).to.deep.equal(['counts', 'devices', 'event_id', 'prio', 'room_id'])
    // Two rooms with unread notifications for bob, until he reads the first.
    expect(gateway.received.map((n) => n.counts)).to.deep.equal([{ unread: 2 }, { unread: 2 }])
    const readFirst = await h.call('POST', `${v3}/rooms/${enc(firstRoom!.roomId)}/receipt/m.read/${enc(firstRoom!.lastEventId)}`, { token: bob.access_token, body: {} })
    expect(readFirst.statusCode).to.equal(200)
    const [third] = await sendEvents(h, roomId, text(alice.user_id, 'after reading the other room'))
    // The receipt also sends a badge update (only counts): bob has one room left unread, this one.
    const ofEvents = () => gateway.received.filter((n) => n.event_id !== undefined)
    await eventually('the third notification arrives', async () => {
      await flush()
      return ofEvents().length >= 3
    })
    expect([ofEvents()[2]!.event_id, ofEvents()[2]!.counts]).to.deep.equal([third!.event_id, { unread: 1 }])
    expect(gateway.received.filter((n) => n.id === '').map((n) => n.counts)).to.deep.equal([{ unread: 1 }])

    gateway.answer = () => [200, { rejected: ['bob-key'] }]
    await sendEvents(h, roomId, text(alice.user_id, 'c'))
    await eventually('the rejected pusher is removed', async () => {
      await flush()
      return (await pushers(bob)).length === 0
    })
    const attempts = gateway.attempts
    await sendEvents(h, roomId, text(alice.user_id, 'd'))
    await flush()
    expect(gateway.attempts).to.equal(attempts)
  })

  it("should not let a slow gateway hold up other users' pushers", async () => {
    const fast = await startGateway()
    try {
      const roomId = await createSharedRoom(h, alice, bob, carol)
      gateway.delayMs = 1500
      expect((await setPusher(bob, pusher('slow-key'))).statusCode).to.equal(200)
      expect((await setPusher(carol, pusher('fast-key', { data: { url: fast.url } }))).statusCode).to.equal(200)
      await h.process!.pushSender!.runOnce()
      const [first] = await sendEvents(h, roomId, text(alice.user_id, 'first'))
      await eventually('the fast gateway receives the first message', () => fast.received.length === 1, 5000)
      // The slow gateway still holds the first message (1.5 s); the second reaches the fast one meanwhile.
      const [second] = await sendEvents(h, roomId, text(alice.user_id, 'second'))
      await eventually('the fast gateway receives the second message', () => fast.received.length === 2, 5000)
      expect(gateway.received, 'the slow gateway has answered nothing yet').to.deep.equal([])
      await eventually('the slow gateway answers both', () => gateway.received.length === 2, 10_000)
      expect([fast.received.map((n) => n.event_id), gateway.received.map((n) => n.event_id)]).to.deep.equal([
        [first!.event_id, second!.event_id],
        [first!.event_id, second!.event_id],
      ])
      await removeAll(bob)
      await removeAll(carol)
    } finally {
      await fast.close()
    }
  })

  it('should send a badge update when the user reads, clearing the badge', async () => {
    const roomId = await createSharedRoom(h, alice, bob)
    expect((await setPusher(bob, pusher('badge-key'))).statusCode).to.equal(200)
    await flush()
    const [message] = await sendEvents(h, roomId, text(alice.user_id, 'read me'))
    await eventually('the message is pushed', async () => {
      await flush()
      return gateway.received.length === 1
    })
    const badge = gateway.received[0]!.counts!.unread
    expect(badge).to.be.greaterThan(0)
    const read = await h.call('POST', `${v3}/rooms/${enc(roomId)}/receipt/m.read/${enc(message!.event_id)}`, { token: bob.access_token, body: {} })
    expect(read.statusCode).to.equal(200)
    await eventually('a badge update arrives', async () => {
      await flush()
      return gateway.received.length === 2
    })
    // Only counts, one room fewer unread (bob's other rooms from earlier tests stay as they are).
    expect(gateway.received[1]).to.deep.include({ id: '', type: null, sender: '', counts: { unread: badge - 1 } })
    expect(gateway.received[1]!.devices[0]).to.deep.include({ pushkey: 'badge-key', tweaks: {} })
    await removeAll(bob)
  })

  it('should send nothing to a pusher deleted a moment ago, before the pushers are read again', async () => {
    const roomId = await createSharedRoom(h, alice, bob)
    expect((await setPusher(bob, pusher('gone-key'))).statusCode).to.equal(200)
    await sendEvents(h, roomId, text(alice.user_id, 'pushed'))
    await eventually('the pusher works', async () => {
      await flush()
      return gateway.received.length === 1
    })
    expect((await setPusher(bob, { kind: null, app_id: 'org.example.app', pushkey: 'gone-key' })).statusCode).to.equal(200)
    // The sender still holds the pusher in memory: the stream's advance wakes it, no refresh asked.
    await sendEvents(h, roomId, text(alice.user_id, 'after the logout'))
    await new Promise((resolve) => setTimeout(resolve, 500))
    expect(gateway.attempts).to.equal(1)
  })

  it('should read nothing but the pushers while there are none, whatever the stream does', async () => {
    expect(await storedPushers(h.t.db)).to.deep.equal([])
    const counted = countingQueries(h.t.db)
    const sender = startPushSender({ db: counted.db, tracker: h.process!.services!.tracker, log: pino({ level: 'silent' }), config: h.config.push })
    const roomId = await createSharedRoom(h, alice, bob)
    await sendEvents(h, roomId, text(alice.user_id, 'nobody to push to'))
    await sender.runOnce()
    await sender.close()
    expect(counted.queries, 'the pushers at start and when asked').to.equal(2)
  })

  it('should push an invite to the invitee, who is not in the room yet', async () => {
    const roomId = await createSharedRoom(h, alice)
    expect((await setPusher(bob, pusher('bob-key'))).statusCode).to.equal(200)
    const invite = await h.call('POST', `${v3}/rooms/${enc(roomId)}/invite`, { token: alice.access_token, body: { user_id: bob.user_id } })
    expect(invite.statusCode).to.equal(200)
    await eventually('the invite is pushed', async () => {
      await flush()
      return gateway.received.length >= 1
    })
    expect(gateway.received[0]).to.deep.include({ type: 'm.room.member', user_is_target: true, prio: 'high' })
    await removeAll(bob)
  })

  // Last: it stops the process's own sender.
  it('should not contact a gateway at a blocked address, written or resolved (the default blocklist)', async () => {
    await h.process!.pushSender!.close()
    const sender = startPushSender({ db: h.t.db, tracker: h.process!.services!.tracker, log: pino({ level: 'silent' }), config: { ...h.config.push, ip_range_blocklist: [...defaultIpRangeBlocklist] } })
    const roomId = await createSharedRoom(h, alice, bob)
    const byName = gateway.url.replace('127.0.0.1', 'localhost')
    expect((await setPusher(bob, pusher('by-address'))).statusCode).to.equal(200)
    expect((await setPusher(bob, pusher('by-name', { data: { url: byName } }))).statusCode).to.equal(200)
    await sendEvents(h, roomId, text(alice.user_id, 'for nobody'))
    await sender.runOnce()
    await new Promise((resolve) => setTimeout(resolve, 300))
    await sender.runOnce()
    await sender.close()
    expect(gateway.attempts).to.equal(0)
    // Both failed and wait for a retry: their positions did not move past the message.
    const stored = await storedPushers(h.t.db, bob.user_id)
    expect(stored.map((p) => p.failingSince !== undefined)).to.deep.equal([true, true])
    await removeAll(bob)
  })
})
