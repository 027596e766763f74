import { expect } from 'chai'
import type { LightMyRequestResponse } from 'fastify'
import { directoryRoutes } from '../../../api/routes/directory.js'
import { roomWriteRoutes } from '../../../api/routes/rooms.js'
import { getCurrentState, getForwardExtremities } from '../../../storage/events/event-store.js'
import { isRoomPublished } from '../../../storage/room-directory.js'
import { startApi, v3, type ApiHarness, type Session } from './api-harness.js'

const enc = encodeURIComponent

describe('api room upgrades (POST /rooms/{roomId}/upgrade)', function () {
  this.timeout(60_000)
  let h: ApiHarness
  let alice: Session
  let bob: Session
  let carol: Session
  before(async () => {
    h = await startApi({ roomRoutes: (services) => [roomWriteRoutes(services), directoryRoutes(services)] })
    alice = await h.register('up_alice')
    bob = await h.register('up_bob')
    carol = await h.register('up_carol')
  })
  after(() => h.close())

  const call = (method: 'POST' | 'PUT' | 'GET', session: Session | undefined, path: string, body?: unknown) =>
    h.call(method, `${v3}${path}`, { ...(session && { token: session.access_token }), ...(body !== undefined && { body }) })
  const ok = async (res: Promise<LightMyRequestResponse>) => {
    const answer = await res
    expect(answer.statusCode, answer.body).to.equal(200)
    return answer.json<Record<string, unknown>>()
  }
  const upgrade = (session: Session | undefined, roomId: string, body: unknown = { new_version: '11' }) => call('POST', session, `/rooms/${enc(roomId)}/upgrade`, body)
  /** Current state as `type|state_key` → content. */
  const stateOf = async (roomId: string) => new Map((await getCurrentState(h.t.db, roomId)).map((s) => [`${s.type}|${s.stateKey}`, s.content]))
  const roomCount = async () => Number((await h.t.db.selectFrom('rooms').select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow()).n)
  const send = (session: Session, roomId: string, txn: string) => call('PUT', session, `/rooms/${enc(roomId)}/send/m.room.message/${txn}`, { msgtype: 'm.text', body: txn })

  it('should create the replacement with the old state and bans, point the old room and its aliases at it, and quiet the old room', async () => {
    const { room_id: oldRoom } = (await ok(
      call('POST', alice, '/createRoom', {
        preset: 'public_chat',
        visibility: 'public',
        room_alias_name: 'upgrade-lobby',
        name: 'Lobby',
        topic: 'Talk here',
        initial_state: [{ type: 'm.room.encryption', content: { algorithm: 'm.megolm.v1.aes-sha2' } }],
        power_level_content_override: { users: { [alice.user_id]: 100, [bob.user_id]: 20 } },
      }),
    )) as { room_id: string }
    await ok(call('POST', bob, `/rooms/${enc(oldRoom)}/join`, {}))
    await ok(call('POST', carol, `/rooms/${enc(oldRoom)}/join`, {}))
    await ok(call('POST', alice, `/rooms/${enc(oldRoom)}/ban`, { user_id: carol.user_id, reason: 'spam' }))
    await ok(send(bob, oldRoom, 'before'))
    const before = await stateOf(oldRoom)
    const [last] = await getForwardExtremities(h.t.db, oldRoom)

    const { replacement_room: newRoom } = (await ok(upgrade(alice, oldRoom))) as { replacement_room: string }
    expect(newRoom).to.match(/^!.+:hs\.test$/).and.not.equal(oldRoom)

    const after = await stateOf(newRoom)
    expect(after.get('m.room.create|')).to.deep.equal({ room_version: '11', predecessor: { room_id: oldRoom, event_id: last?.eventId } })
    for (const key of ['m.room.power_levels|', 'm.room.join_rules|', 'm.room.history_visibility|', 'm.room.name|', 'm.room.topic|', 'm.room.encryption|', 'm.room.canonical_alias|']) {
      expect(after.get(key), key).to.deep.equal(before.get(key))
    }
    expect(after.get('m.room.canonical_alias|')).to.deep.equal({ alias: '#upgrade-lobby:hs.test' })
    expect(after.get(`m.room.member|${carol.user_id}`)?.['membership'], 'the ban is copied').to.equal('ban')
    expect(after.get(`m.room.member|${alice.user_id}`)?.['membership']).to.equal('join')
    expect(after.has(`m.room.member|${bob.user_id}`), 'members join by themselves').to.equal(false)
    expect(after.has('m.room.guest_access|'), 'nothing the old room did not have').to.equal(false)

    const old = await stateOf(oldRoom)
    expect(old.get('m.room.tombstone|')).to.deep.equal({ body: 'This room has been replaced', replacement_room: newRoom })
    expect(old.get('m.room.power_levels|')).to.deep.include({ events_default: 50, invite: 50 })
    expect(old.get('m.room.canonical_alias|')).to.deep.equal({})
    expect((await call('GET', bob, `/directory/room/${enc('#upgrade-lobby:hs.test')}`)).json()).to.include({ room_id: newRoom })
    expect([await isRoomPublished(h.t.db, oldRoom), await isRoomPublished(h.t.db, newRoom)]).to.deep.equal([false, true])

    // Ordinary members are sent on: no more messages in the old room, and the new one lets them in.
    const refused = await send(bob, oldRoom, 'after')
    expect([refused.statusCode, refused.json().errcode]).to.deep.equal([403, 'M_FORBIDDEN'])
    await ok(call('POST', bob, `/rooms/${enc(newRoom)}/join`, {}))
    await ok(send(bob, newRoom, 'hello-again'))
    const banned = await call('POST', carol, `/rooms/${enc(newRoom)}/join`, {})
    expect(banned.statusCode).to.equal(403)
  })

  it('should raise the upgrading user for the creation when the copied state needs it, then restore the old power levels', async () => {
    // Bob may tombstone (50) but not send state (state_default 100): the creation needs 100.
    const levels = { users: { [alice.user_id]: 100, [bob.user_id]: 50 }, state_default: 100, events: { 'm.room.tombstone': 50, 'm.room.power_levels': 100 } }
    const { room_id: oldRoom } = (await ok(call('POST', alice, '/createRoom', { preset: 'public_chat', name: 'Strict', power_level_content_override: levels }))) as { room_id: string }
    await ok(call('POST', bob, `/rooms/${enc(oldRoom)}/join`, {}))
    const oldLevels = (await stateOf(oldRoom)).get('m.room.power_levels|')

    const { replacement_room: newRoom } = (await ok(upgrade(bob, oldRoom))) as { replacement_room: string }
    const after = await stateOf(newRoom)
    expect(after.get('m.room.power_levels|'), 'restored after the creation').to.deep.equal(oldLevels)
    expect(after.get('m.room.name|')).to.deep.equal({ name: 'Strict' })
    const old = await stateOf(oldRoom)
    expect(old.get('m.room.tombstone|')).to.include({ replacement_room: newRoom })
    expect(old.get('m.room.power_levels|'), 'bob may not change the power levels: left as they were').to.deep.equal(oldLevels)
  })

  it('should refuse with a Matrix error and create nothing: no power, not joined, unknown version, bad body, unknown room, no token', async () => {
    const { room_id: roomId } = (await ok(call('POST', alice, '/createRoom', { preset: 'public_chat' }))) as { room_id: string }
    await ok(call('POST', bob, `/rooms/${enc(roomId)}/join`, {}))
    const rooms = await roomCount()
    const cases: [string, Promise<LightMyRequestResponse>, number, string][] = [
      ['member without the power', upgrade(bob, roomId), 403, 'M_FORBIDDEN'],
      ['not joined', upgrade(carol, roomId), 403, 'M_FORBIDDEN'],
      ['unknown version', upgrade(alice, roomId, { new_version: '1' }), 400, 'M_UNSUPPORTED_ROOM_VERSION'],
      ['no new_version', upgrade(alice, roomId, {}), 400, 'M_BAD_JSON'],
      ['new_version not a string', upgrade(alice, roomId, { new_version: 11 }), 400, 'M_BAD_JSON'],
      ['unknown room', upgrade(alice, '!nowhere:hs.test'), 404, 'M_NOT_FOUND'],
      ['malformed room ID', upgrade(alice, 'nowhere'), 400, 'M_INVALID_PARAM'],
      ['no token', upgrade(undefined, roomId), 401, 'M_MISSING_TOKEN'],
    ]
    for (const [name, res, code, errcode] of cases) {
      const answer = await res
      expect([name, answer.statusCode, answer.json().errcode]).to.deep.equal([name, code, errcode])
    }
    expect(await roomCount(), 'no replacement room').to.equal(rooms)
    expect((await stateOf(roomId)).has('m.room.tombstone|')).to.equal(false)
  })
})
