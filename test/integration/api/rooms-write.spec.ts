import { expect } from 'chai'
import type { LightMyRequestResponse } from 'fastify'
import { directoryRoutes } from '../../../api/routes/directory.js'
import { roomWriteRoutes } from '../../../api/routes/rooms.js'
import { getCurrentState, getEvent } from '../../../storage/events/event-store.js'
import { startApi, v3, type ApiHarness, type Session } from './api-harness.js'

const enc = encodeURIComponent

describe('api room writes (createRoom, membership, send, state, redact)', function () {
  this.timeout(60_000)
  let h: ApiHarness
  let alice: Session
  let bob: Session
  let carol: Session
  before(async () => {
    h = await startApi({ roomRoutes: (services) => [roomWriteRoutes(services), directoryRoutes(services)] })
    alice = await h.register('alice')
    bob = await h.register('bob')
    carol = await h.register('carol')
  })
  after(() => h.close())

  const call = (method: 'POST' | 'PUT' | 'GET', session: Session | undefined, path: string, body?: unknown) =>
    h.call(method, `${v3}${path}`, { ...(session && { token: session.access_token }), ...(body !== undefined && { body }) })
  const status = (res: LightMyRequestResponse) => [res.statusCode, res.statusCode === 200 ? undefined : res.json().errcode]

  async function createRoom(session: Session, body: Record<string, unknown> = {}): Promise<string> {
    const res = await call('POST', session, '/createRoom', body)
    expect(res.statusCode, res.body).to.equal(200)
    return res.json().room_id as string
  }

  /** Current state as `type|state_key` → content. */
  async function stateOf(roomId: string): Promise<Map<string, Record<string, unknown>>> {
    const state = await getCurrentState(h.t.db, roomId)
    return new Map(state.map((s) => [`${s.type}|${s.stateKey}`, s.content]))
  }

  async function membershipOf(roomId: string, userId: string): Promise<unknown> {
    return (await stateOf(roomId)).get(`m.room.member|${userId}`)?.['membership']
  }

  async function roomCount(): Promise<number> {
    const row = await h.t.db.selectFrom('rooms').select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow()
    return Number(row.n)
  }

  const membershipAction = (session: Session, roomId: string, action: string, body: Record<string, unknown> = {}) =>
    call('POST', session, `/rooms/${enc(roomId)}/${action}`, body)

  describe('createRoom', () => {
    const cases = [
      { preset: 'private_chat', joinRule: 'invite', guest: 'can_join', invite: 0, published: false },
      { preset: 'trusted_private_chat', joinRule: 'invite', guest: 'can_join', invite: 0, published: false },
      { preset: 'public_chat', joinRule: 'public', guest: undefined, invite: 50, published: false },
      { preset: undefined, visibility: 'public', joinRule: 'public', guest: undefined, invite: 50, published: true },
      { preset: undefined, visibility: undefined, joinRule: 'invite', guest: 'can_join', invite: 0, published: false },
    ] as const
    for (const c of cases) {
      it(`should apply preset ${c.preset ?? `(default for visibility ${'visibility' in c ? c.visibility : 'absent'})`}`, async () => {
        const roomId = await createRoom(alice, {
          ...(c.preset && { preset: c.preset }),
          ...('visibility' in c && c.visibility && { visibility: c.visibility }),
          invite: [bob.user_id],
        })
        expect(roomId).to.match(/^![A-Za-z0-9_-]{18}:hs\.test$/)
        const state = await stateOf(roomId)
        expect(state.get('m.room.create|')).to.deep.equal({ room_version: '11' })
        expect(state.get(`m.room.member|${alice.user_id}`)).to.deep.equal({ membership: 'join', displayname: 'alice' })
        expect(state.get('m.room.join_rules|')).to.deep.equal({ join_rule: c.joinRule })
        expect(state.get('m.room.history_visibility|')).to.deep.equal({ history_visibility: 'shared' })
        expect(state.get('m.room.guest_access|')?.['guest_access']).to.equal(c.guest)
        expect(state.get(`m.room.member|${bob.user_id}`)).to.deep.equal({ membership: 'invite' })
        const levels = state.get('m.room.power_levels|') as Record<string, Record<string, number>>
        expect(levels['invite']).to.equal(c.invite)
        expect(levels['users']).to.deep.equal({ [alice.user_id]: 100, ...(c.preset === 'trusted_private_chat' && { [bob.user_id]: 100 }) })
        expect(levels['events']?.['m.room.power_levels']).to.equal(100)
        const room = await h.t.db.selectFrom('rooms').select(['is_public', 'creator', 'room_version']).where('room_id', '=', roomId).executeTakeFirstOrThrow()
        expect(room).to.deep.equal({ is_public: c.published, creator: alice.user_id, room_version: '11' })
      })
    }

    it('should apply initial_state, power_level_content_override, creation_content, name, topic and is_direct, in the spec order', async () => {
      const roomId = await createRoom(alice, {
        preset: 'public_chat',
        name: 'Lobby',
        topic: 'Talk',
        is_direct: true,
        invite: [carol.user_id],
        creation_content: { 'm.federate': false, room_version: '9' },
        initial_state: [
          { type: 'm.room.history_visibility', content: { history_visibility: 'joined' } },
          { type: 'org.example.custom', state_key: 'k', content: { v: 1 } },
          { type: 'm.room.name', content: { name: 'overridden by name' } },
        ],
        power_level_content_override: { events_default: 10, users: { [alice.user_id]: 100, [bob.user_id]: 50 } },
      })
      const state = await stateOf(roomId)
      expect(state.get('m.room.create|')).to.deep.equal({ 'm.federate': false, room_version: '11' })
      expect(state.get('m.room.history_visibility|')).to.deep.equal({ history_visibility: 'joined' })
      expect(state.get('org.example.custom|k')).to.deep.equal({ v: 1 })
      expect(state.get('m.room.name|')).to.deep.equal({ name: 'Lobby' })
      expect(state.get('m.room.topic|')).to.deep.equal({ topic: 'Talk' })
      expect(state.get(`m.room.member|${carol.user_id}`)).to.deep.equal({ membership: 'invite', is_direct: true })
      const levels = state.get('m.room.power_levels|') as Record<string, unknown>
      expect(levels['events_default']).to.equal(10)
      expect(levels['users']).to.deep.equal({ [alice.user_id]: 100, [bob.user_id]: 50 })
      const events = await h.t.db.selectFrom('events').select(['type', 'state_key']).where('room_id', '=', roomId).orderBy('stream_ordering').execute()
      expect(events.map((e) => e.type)).to.deep.equal([
        'm.room.create',
        'm.room.member',
        'm.room.power_levels',
        'm.room.join_rules',
        'm.room.history_visibility',
        'org.example.custom',
        'm.room.name',
        'm.room.name',
        'm.room.topic',
        'm.room.member',
      ])
    })

    it('should use initial_state power levels as they are (without the override)', async () => {
      const custom = { users: { [alice.user_id]: 100 }, ban: 1, state_default: 7 }
      const roomId = await createRoom(alice, { initial_state: [{ type: 'm.room.power_levels', content: custom }], power_level_content_override: { ban: 99 } })
      expect((await stateOf(roomId)).get('m.room.power_levels|')).to.deep.equal(custom)
    })

    it('should refuse bad requests before creating anything', async () => {
      const before = await roomCount()
      const cases: [Record<string, unknown>, number, string][] = [
        [{ room_version: '10' }, 400, 'M_UNSUPPORTED_ROOM_VERSION'],
        [{ preset: 'party' }, 400, 'M_BAD_JSON'],
        [{ visibility: 'secret' }, 400, 'M_BAD_JSON'],
        [{ invite: 'bob' }, 400, 'M_BAD_JSON'],
        [{ invite: ['bob'] }, 400, 'M_INVALID_PARAM'],
        [{ invite: ['@bob:other.test'] }, 403, 'M_FORBIDDEN'],
        [{ invite: ['@ghost:hs.test'] }, 404, 'M_NOT_FOUND'],
        [{ invite: [alice.user_id] }, 400, 'M_INVALID_ROOM_STATE'],
        [{ invite_3pid: [{ medium: 'email' }] }, 400, 'M_BAD_JSON'],
        [{ room_alias_name: 'a:b' }, 400, 'M_INVALID_PARAM'],
        [{ room_alias_name: 'a b' }, 400, 'M_INVALID_PARAM'],
        [{ power_level_content_override: { users: { [bob.user_id]: 100 } } }, 400, 'M_INVALID_ROOM_STATE'],
        [{ power_level_content_override: { users: { [alice.user_id]: 10 } } }, 400, 'M_INVALID_ROOM_STATE'],
        [{ power_level_content_override: { ban: 'high' } }, 400, 'M_INVALID_ROOM_STATE'],
        [{ initial_state: [{ type: 'm.room.create', content: {} }] }, 400, 'M_INVALID_ROOM_STATE'],
        [{ initial_state: [{ type: 'x', state_key: bob.user_id, content: {} }] }, 400, 'M_INVALID_ROOM_STATE'],
        [{ initial_state: [{ type: 'x' }] }, 400, 'M_BAD_JSON'],
        [{ name: 5 }, 400, 'M_BAD_JSON'],
        [{ creation_content: [] }, 400, 'M_BAD_JSON'],
      ]
      for (const [body, code, errcode] of cases) {
        const res = await call('POST', alice, '/createRoom', body)
        expect(status(res), JSON.stringify(body)).to.deep.equal([code, errcode])
      }
      const raw = await h.call('POST', `${v3}/createRoom`, { token: alice.access_token, raw: '{"name":' })
      expect(status(raw)).to.deep.equal([400, 'M_NOT_JSON'])
      const anonymous = await call('POST', undefined, '/createRoom', {})
      expect(status(anonymous)).to.deep.equal([401, 'M_MISSING_TOKEN'])
      expect(await roomCount()).to.equal(before)
    })

    it('should answer under r0 too', async () => {
      const res = await h.call('POST', '/_matrix/client/r0/createRoom', { token: alice.access_token, body: {} })
      expect(res.statusCode).to.equal(200)
    })
  })

  describe('joining', () => {
    it('should let anyone join a public room, only invitees an invite-only one, and no banned user', async () => {
      const publicRoom = await createRoom(alice, { preset: 'public_chat' })
      const inviteOnly = await createRoom(alice, { preset: 'private_chat' })
      const invited = await createRoom(alice, { preset: 'private_chat', invite: [bob.user_id] })
      const table: [string, string, number, string | undefined][] = [
        ['public room', publicRoom, 200, undefined],
        ['invite-only room', inviteOnly, 403, 'M_FORBIDDEN'],
        ['invite-only room with an invite', invited, 200, undefined],
      ]
      for (const [what, roomId, code, errcode] of table) {
        const res = await call('POST', bob, `/join/${enc(roomId)}`)
        expect(status(res), what).to.deep.equal([code, errcode])
        if (code === 200) {
          expect(res.json()).to.deep.equal({ room_id: roomId })
          expect((await stateOf(roomId)).get(`m.room.member|${bob.user_id}`)).to.deep.equal({ membership: 'join', displayname: 'bob' })
        }
      }
      expect(status(await membershipAction(alice, publicRoom, 'ban', { user_id: carol.user_id, reason: 'spam' }))).to.deep.equal([200, undefined])
      expect((await stateOf(publicRoom)).get(`m.room.member|${carol.user_id}`)).to.deep.equal({ membership: 'ban', reason: 'spam' })
      const banned = await call('POST', carol, `/rooms/${enc(publicRoom)}/join`, { reason: 'let me in' })
      expect(status(banned)).to.deep.equal([403, 'M_FORBIDDEN'])
      expect(banned.json().error).to.match(/banned/)
    })

    it('should join by alias, 404 for an unknown alias or room, 400 for a malformed one', async () => {
      const roomId = await createRoom(alice, { preset: 'public_chat', room_alias_name: 'joinable' })
      const res = await call('POST', bob, `/join/${enc('#joinable:hs.test')}`, {})
      expect(res.json()).to.deep.equal({ room_id: roomId })
      expect(await membershipOf(roomId, bob.user_id)).to.equal('join')
      expect(status(await call('POST', bob, `/join/${enc('#nothing:hs.test')}`))).to.deep.equal([404, 'M_NOT_FOUND'])
      expect(status(await call('POST', bob, `/join/${enc('!nothing:hs.test')}`))).to.deep.equal([404, 'M_NOT_FOUND'])
      expect(status(await call('POST', bob, `/rooms/${enc('!nothing:hs.test')}/join`))).to.deep.equal([404, 'M_NOT_FOUND'])
      for (const bad of ['nothing', '#no-server', '!no-server', '#a:b c', '!' + 'x'.repeat(300) + ':hs.test']) {
        expect(status(await call('POST', bob, `/join/${enc(bad)}`)), bad).to.deep.equal([400, 'M_INVALID_PARAM'])
      }
    })
  })

  describe('invite, kick, ban, unban', () => {
    it('should follow the power levels', async () => {
      // private_chat: invite 0, kick/ban 50; bob (0) and carol (0) joined, alice 100.
      const roomId = await createRoom(alice, { preset: 'private_chat', invite: [bob.user_id] })
      await call('POST', bob, `/rooms/${enc(roomId)}/join`)
      const table: [string, Session, string, Record<string, unknown>, number, string | undefined, unknown][] = [
        ['bob invites carol (invite level 0)', bob, 'invite', { user_id: carol.user_id }, 200, undefined, 'invite'],
        ['bob invites carol again', bob, 'invite', { user_id: carol.user_id }, 200, undefined, 'invite'],
        ['bob kicks carol (kick level 50)', bob, 'kick', { user_id: carol.user_id }, 403, 'M_FORBIDDEN', 'invite'],
        ['bob bans carol (ban level 50)', bob, 'ban', { user_id: carol.user_id }, 403, 'M_FORBIDDEN', 'invite'],
        ['alice kicks carol (revokes the invite)', alice, 'kick', { user_id: carol.user_id, reason: 'oops' }, 200, undefined, 'leave'],
        ['alice kicks carol, no longer in the room', alice, 'kick', { user_id: carol.user_id }, 403, 'M_FORBIDDEN', 'leave'],
        ['alice unbans carol, not banned', alice, 'unban', { user_id: carol.user_id }, 403, 'M_FORBIDDEN', 'leave'],
        ['alice bans carol', alice, 'ban', { user_id: carol.user_id }, 200, undefined, 'ban'],
        ['bob invites carol, banned', bob, 'invite', { user_id: carol.user_id }, 403, 'M_FORBIDDEN', 'ban'],
        ['bob unbans carol (ban level 50)', bob, 'unban', { user_id: carol.user_id }, 403, 'M_FORBIDDEN', 'ban'],
        ['alice unbans carol', alice, 'unban', { user_id: carol.user_id }, 200, undefined, 'leave'],
        ['carol kicks bob, not in the room', carol, 'kick', { user_id: bob.user_id }, 403, 'M_FORBIDDEN', 'leave'],
        ['bob kicks alice (100 > 0)', bob, 'kick', { user_id: alice.user_id }, 403, 'M_FORBIDDEN', 'leave'],
      ]
      for (const [what, session, action, body, code, errcode, carolAfter] of table) {
        const res = await membershipAction(session, roomId, action, body)
        expect(status(res), `${what}: ${res.body}`).to.deep.equal([code, errcode])
        expect(await membershipOf(roomId, carol.user_id), what).to.equal(carolAfter)
      }
      expect((await stateOf(roomId)).get(`m.room.member|${alice.user_id}`)?.['membership']).to.equal('join')
    })

    it('should refuse inviting in a public_chat room below the invite level, and bad targets', async () => {
      const roomId = await createRoom(alice, { preset: 'public_chat' })
      await call('POST', bob, `/join/${enc(roomId)}`)
      expect(status(await membershipAction(bob, roomId, 'invite', { user_id: carol.user_id }))).to.deep.equal([403, 'M_FORBIDDEN'])
      const bad: [Record<string, unknown>, number, string][] = [
        [{}, 400, 'M_BAD_JSON'],
        [{ user_id: 5 }, 400, 'M_BAD_JSON'],
        [{ user_id: 'carol' }, 400, 'M_INVALID_PARAM'],
        [{ user_id: '@carol:other.test' }, 403, 'M_FORBIDDEN'],
        [{ user_id: '@ghost:hs.test' }, 404, 'M_NOT_FOUND'],
        [{ user_id: bob.user_id }, 403, 'M_FORBIDDEN'],
      ]
      for (const [body, code, errcode] of bad) {
        expect(status(await membershipAction(alice, roomId, 'invite', body)), JSON.stringify(body)).to.deep.equal([code, errcode])
      }
      expect(status(await membershipAction(alice, '!nothing:hs.test', 'invite', { user_id: carol.user_id }))).to.deep.equal([404, 'M_NOT_FOUND'])
      expect(status(await membershipAction(alice, 'nothing', 'ban', { user_id: carol.user_id }))).to.deep.equal([400, 'M_INVALID_PARAM'])
    })
  })

  describe('leave and forget', () => {
    it('should refuse forgetting a room the user is still in, and accept it after leaving', async () => {
      const roomId = await createRoom(alice, { preset: 'public_chat' })
      await call('POST', bob, `/join/${enc(roomId)}`)
      expect(status(await membershipAction(bob, roomId, 'forget'))).to.deep.equal([400, 'M_UNKNOWN'])
      expect(status(await membershipAction(bob, roomId, 'leave', { reason: 'bye' }))).to.deep.equal([200, undefined])
      expect((await stateOf(roomId)).get(`m.room.member|${bob.user_id}`)).to.deep.equal({ membership: 'leave', reason: 'bye' })
      expect(status(await membershipAction(bob, roomId, 'leave'))).to.deep.equal([403, 'M_FORBIDDEN'])
      const forget = await h.call('POST', `${v3}/rooms/${enc(roomId)}/forget`, { token: bob.access_token })
      expect([forget.statusCode, forget.json()]).to.deep.equal([200, {}])
      expect(status(await membershipAction(carol, roomId, 'forget'))).to.deep.equal([200, undefined])
      expect(status(await membershipAction(bob, '!nothing:hs.test', 'forget'))).to.deep.equal([404, 'M_NOT_FOUND'])
    })
  })

  describe('send', () => {
    it('should answer the same event for a repeated transaction ID of the same device only', async () => {
      const roomId = await createRoom(alice, { preset: 'public_chat' })
      await call('POST', bob, `/join/${enc(roomId)}`)
      const login = await h.call('POST', `${v3}/login`, {
        body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: 'bob' }, password: 'correct horse battery' },
      })
      const bobPhone = login.json<Session>()
      const path = `/rooms/${enc(roomId)}/send/m.room.message/txn1`
      const first = await call('PUT', bob, path, { msgtype: 'm.text', body: 'hi' })
      const again = await call('PUT', bob, path, { msgtype: 'm.text', body: 'hi' })
      const otherDevice = await call('PUT', bobPhone, path, { msgtype: 'm.text', body: 'hi' })
      const otherTxn = await call('PUT', bob, `/rooms/${enc(roomId)}/send/m.room.message/txn2`, { msgtype: 'm.text', body: 'hi' })
      expect(first.statusCode).to.equal(200)
      const ids = [first, again, otherDevice, otherTxn].map((r) => r.json().event_id as string)
      expect(ids[0]).to.match(/^\$/)
      expect(ids[1]).to.equal(ids[0])
      expect(new Set(ids).size).to.equal(3)
      const stored = await getEvent(h.t.db, ids[0] as string)
      expect(stored?.pdu).to.include({ type: 'm.room.message', sender: bob.user_id, room_id: roomId })
      expect(stored?.pdu['content']).to.deep.equal({ msgtype: 'm.text', body: 'hi' })
    })

    it('should store no replication answer for writes persisted in this process (a retry is a new request)', async () => {
      const answers = async () => Number((await h.t.db.selectFrom('replication_requests').select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow()).n)
      const before = await answers()
      const roomId = await createRoom(alice, { preset: 'public_chat' })
      const sent = await call('PUT', alice, `/rooms/${enc(roomId)}/send/m.room.message/unrecorded`, { msgtype: 'm.text', body: 'hi' })
      expect(sent.statusCode).to.equal(200)
      expect(await answers()).to.equal(before)
    })

    it('should refuse a member who just left (the pre-check remembers joins; the persister decides)', async () => {
      const roomId = await createRoom(alice, { preset: 'public_chat' })
      expect((await membershipAction(bob, roomId, 'join')).statusCode).to.equal(200)
      const path = () => `/rooms/${enc(roomId)}/send/m.room.message/t-${Math.random()}`
      expect((await call('PUT', bob, path(), { body: 'while joined' })).statusCode).to.equal(200)
      expect((await membershipAction(bob, roomId, 'leave')).statusCode).to.equal(200)
      const refused = await call('PUT', bob, path(), { body: 'after leaving' })
      expect(status(refused)).to.deep.equal([403, 'M_FORBIDDEN'])
      const bodies = (await h.t.db.selectFrom('event_json').select('json').where('room_id', '=', roomId).execute()).map((r) => JSON.parse(r.json).content?.body)
      expect(bodies).to.include('while joined')
      expect(bodies).to.not.include('after leaving')
    })

    it('should refuse non-members, unknown rooms, bad bodies and missing tokens', async () => {
      const roomId = await createRoom(alice, { preset: 'public_chat' })
      const path = (room: string) => `/rooms/${enc(room)}/send/m.room.message/t-${Math.random()}`
      expect(status(await call('PUT', carol, path(roomId), { body: 'x' }))).to.deep.equal([403, 'M_FORBIDDEN'])
      expect(status(await call('PUT', alice, path('!nothing:hs.test'), { body: 'x' }))).to.deep.equal([404, 'M_NOT_FOUND'])
      expect(status(await call('PUT', alice, path('nothing'), { body: 'x' }))).to.deep.equal([400, 'M_INVALID_PARAM'])
      expect(status(await call('PUT', alice, path(roomId), ['x']))).to.deep.equal([400, 'M_BAD_JSON'])
      expect(status(await call('PUT', alice, path(roomId), 'x'))).to.deep.equal([400, 'M_BAD_JSON'])
      expect(status(await h.call('PUT', `${v3}${path(roomId)}`, { token: alice.access_token, raw: '{' }))).to.deep.equal([400, 'M_NOT_JSON'])
      expect(status(await h.call('PUT', `${v3}${path(roomId)}`, { token: alice.access_token }))).to.deep.equal([400, 'M_NOT_JSON'])
      expect(status(await call('PUT', undefined, path(roomId), {}))).to.deep.equal([401, 'M_MISSING_TOKEN'])
      const big = await call('PUT', alice, path(roomId), { body: 'x'.repeat(70_000) })
      expect(status(big)).to.deep.equal([413, 'M_TOO_LARGE'])
    })
  })

  describe('state', () => {
    it('should let the privileged set state, refuse others with 403, and treat a missing state key as empty', async () => {
      const roomId = await createRoom(alice, { preset: 'public_chat' })
      await call('POST', bob, `/join/${enc(roomId)}`)
      const name = await call('PUT', alice, `/rooms/${enc(roomId)}/state/m.room.name`, { name: 'One' })
      expect(name.json().event_id).to.match(/^\$/)
      expect((await stateOf(roomId)).get('m.room.name|')).to.deep.equal({ name: 'One' })
      expect((await call('PUT', alice, `/rooms/${enc(roomId)}/state/m.room.name/`, { name: 'Two' })).statusCode).to.equal(200)
      expect((await stateOf(roomId)).get('m.room.name|')).to.deep.equal({ name: 'Two' })
      const custom = await call('PUT', alice, `/rooms/${enc(roomId)}/state/org.example/${enc('a/b c')}`, { v: 2 })
      expect(custom.statusCode).to.equal(200)
      expect((await stateOf(roomId)).get('org.example|a/b c')).to.deep.equal({ v: 2 })

      const table: [string, Session, string, Record<string, unknown>, number, string | undefined][] = [
        ['bob sets the name (50 needed)', bob, '/state/m.room.name', { name: 'Bob' }, 403, 'M_FORBIDDEN'],
        ['bob sets power levels', bob, '/state/m.room.power_levels', { users: { [bob.user_id]: 100 } }, 403, 'M_FORBIDDEN'],
        ['bob sets state keyed by alice', bob, `/state/org.example/${enc(alice.user_id)}`, {}, 403, 'M_FORBIDDEN'],
        ['carol (not joined) sets a topic', carol, '/state/m.room.topic', { topic: 'x' }, 403, 'M_FORBIDDEN'],
        ['alice sends invalid power levels', alice, '/state/m.room.power_levels', { ban: 'x' }, 403, 'M_FORBIDDEN'],
        ['carol joins through the state API', carol, `/state/m.room.member/${enc(carol.user_id)}`, { membership: 'join' }, 200, undefined],
      ]
      for (const [what, session, path, body, code, errcode] of table) {
        const res = await call('PUT', session, `/rooms/${enc(roomId)}${path}`, body)
        expect(status(res), `${what}: ${res.body}`).to.deep.equal([code, errcode])
      }
      expect((await stateOf(roomId)).get('m.room.name|')).to.deep.equal({ name: 'Two' })
      expect(await membershipOf(roomId, carol.user_id)).to.equal('join')
    })
  })

  describe('redact', () => {
    it('should let senders redact their own events and the privileged any event', async () => {
      const roomId = await createRoom(alice, { preset: 'public_chat' })
      await call('POST', bob, `/join/${enc(roomId)}`)
      const sendText = async (session: Session, body: string) =>
        (await call('PUT', session, `/rooms/${enc(roomId)}/send/m.room.message/${body}`, { msgtype: 'm.text', body })).json().event_id as string
      const fromAlice = await sendText(alice, 'a1')
      const fromBob = await sendText(bob, 'b1')
      const redact = (session: Session, eventId: string, txnId: string, body?: unknown) =>
        call('PUT', session, `/rooms/${enc(roomId)}/redact/${enc(eventId)}/${txnId}`, body)

      expect(status(await redact(bob, fromAlice, 'r1'))).to.deep.equal([403, 'M_FORBIDDEN'])
      const own = await redact(bob, fromBob, 'r2', { reason: 'typo' })
      expect(own.statusCode).to.equal(200)
      const again = await redact(bob, fromBob, 'r2', { reason: 'typo' })
      expect(again.json().event_id).to.equal(own.json().event_id)
      const redaction = await getEvent(h.t.db, own.json().event_id)
      expect(redaction?.pdu).to.include({ type: 'm.room.redaction', sender: bob.user_id })
      expect(redaction?.pdu['content']).to.deep.equal({ redacts: fromBob, reason: 'typo' })
      expect((await h.call('PUT', `${v3}/rooms/${enc(roomId)}/redact/${enc(fromAlice)}/r3`, { token: alice.access_token })).statusCode).to.equal(200)
      expect(status(await redact(alice, '$unknown', 'r4', {}))).to.deep.equal([404, 'M_NOT_FOUND'])
      expect(status(await redact(carol, fromAlice, 'r5', {}))).to.deep.equal([403, 'M_FORBIDDEN'])
      const elsewhere = await createRoom(alice, {})
      expect(status(await call('PUT', alice, `/rooms/${enc(elsewhere)}/redact/${enc(fromBob)}/r6`, {}))).to.deep.equal([404, 'M_NOT_FOUND'])
      expect(status(await redact(alice, fromBob, 'r7', { reason: 7 }))).to.deep.equal([400, 'M_BAD_JSON'])
    })
  })

  describe('fuzzing', () => {
    it('should never answer 500 to malformed parameters or bodies', async () => {
      const roomId = await createRoom(alice, { preset: 'public_chat' })
      const ids = [roomId, '!', '!:', '!a:', ':x', '#a:hs.test', '@a:hs.test', 'x'.repeat(2100), '!a:hs.test/../b', '!ü:hs.test', '%00', '!a:[::1]:8448', '!a:hs.test:99999999']
      const bodies: unknown[] = [undefined, {}, [], 'x', 1, null, { user_id: null }, { user_id: ['a'] }, { reason: {} }, { user_id: '@' + 'a'.repeat(300) + ':hs.test' }, { thread_id: 'x'.repeat(300) }, { 'm.read': '$' + 'x'.repeat(300) }, { typing: true, timeout: 1e300 }, { typing: false, timeout: null }]
      const answers = new Set<number>()
      for (const id of ids) {
        for (const body of bodies) {
          const requests: [method: 'POST' | 'PUT', path: string][] = [
            ['POST', `/join/${enc(id)}`],
            ['POST', `/rooms/${enc(id)}/leave`],
            ['POST', `/rooms/${enc(id)}/invite`],
            ['POST', `/rooms/${enc(id)}/kick`],
            ['POST', `/rooms/${enc(id)}/unban`],
            ['POST', `/rooms/${enc(id)}/forget`],
            ['PUT', `/rooms/${enc(id)}/send/${enc(id)}/${enc(id)}`],
            ['PUT', `/rooms/${enc(roomId)}/state/${enc(id)}/${enc(id)}`],
            ['PUT', `/rooms/${enc(id)}/redact/${enc(id)}/t`],
            ['POST', `/rooms/${enc(id)}/receipt/m.read/${enc(id)}`],
            ['POST', `/rooms/${enc(roomId)}/receipt/${enc(id)}/${enc(id)}`],
            ['POST', `/rooms/${enc(roomId)}/read_markers`],
            ['PUT', `/rooms/${enc(id)}/typing/${enc(id)}`],
            ['PUT', `/rooms/${enc(roomId)}/typing/${enc(alice.user_id)}`],
            ['POST', '/createRoom'],
          ]
          for (const [method, path] of requests) {
            const res = await call(method, alice, path, body)
            answers.add(res.statusCode)
            expect(res.statusCode, `${method} ${path.slice(0, 120)} ${JSON.stringify(body)?.slice(0, 80)}: ${res.body.slice(0, 200)}`).to.be.below(500)
            if (res.statusCode >= 400) expect(res.json().errcode).to.be.a('string')
          }
        }
      }
      expect([...answers].some((code) => code >= 400)).to.equal(true)
    })
  })
})
