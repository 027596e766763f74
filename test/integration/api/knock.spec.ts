import { expect } from 'chai'
import type { LightMyRequestResponse } from 'fastify'
import { directoryRoutes } from '../../../api/routes/directory.js'
import { roomReadRoutes } from '../../../api/routes/room-reads.js'
import { roomWriteRoutes } from '../../../api/routes/rooms.js'
import { syncRoutes } from '../../../api/routes/sync.js'
import { startApi, v3, type ApiHarness, type Session } from './api-harness.js'
import { createRoomAs, enc, joinAs, syncAs } from './read-fixtures.js'

interface StrippedEvent {
  type: string
  state_key: string
  sender: string
  content: Record<string, unknown>
}
interface SyncBody {
  next_batch: string
  rooms: {
    join: Record<string, { timeline: { events: { type: string; state_key?: string; content: Record<string, unknown> }[] } }>
    invite: Record<string, unknown>
    leave: Record<string, unknown>
    knock: Record<string, { knock_state: { events: StrippedEvent[] } }>
  }
}

describe('api knocking (POST /knock/{roomIdOrAlias}, rooms.knock in /sync)', function () {
  this.timeout(60_000)
  let h: ApiHarness
  let alice: Session
  let bob: Session
  let carol: Session
  before(async () => {
    h = await startApi({ roomRoutes: (services) => [roomWriteRoutes(services), directoryRoutes(services), roomReadRoutes(services), syncRoutes(services)] })
    alice = await h.register('kn_alice')
    bob = await h.register('kn_bob')
    carol = await h.register('kn_carol')
  })
  after(() => h.close())

  const knock = (session: Session | undefined, target: string, body: unknown = {}) =>
    h.call('POST', `${v3}/knock/${enc(target)}`, { ...(session && { token: session.access_token }), body })
  const action = (session: Session, roomId: string, name: string, body: unknown) => h.call('POST', `${v3}/rooms/${enc(roomId)}/${name}`, { token: session.access_token, body })
  const expectOk = (res: LightMyRequestResponse) => expect(res.statusCode, res.body).to.equal(200)
  const knockRoom = (alias: string) =>
    createRoomAs(h, alice, { preset: 'private_chat', name: 'Ask first', room_alias_name: alias, initial_state: [{ type: 'm.room.join_rules', content: { join_rule: 'knock' } }] })

  it("should knock by alias or ID, show the knocker the room's stripped state, the moderators the knock, and let an invite in", async () => {
    const roomId = await knockRoom('knock-club')
    const aliceBefore = await syncAs<SyncBody>(h, alice)
    const bobBefore = await syncAs<SyncBody>(h, bob)

    const res = await knock(bob, '#knock-club:hs.test', { reason: 'let me in' })
    expectOk(res)
    expect(res.json()).to.deep.equal({ room_id: roomId })

    const bobSync = await syncAs<SyncBody>(h, bob, { since: bobBefore.next_batch })
    const stripped = bobSync.rooms.knock[roomId]?.knock_state.events ?? []
    const byType = new Map(stripped.map((e) => [`${e.type}|${e.state_key}`, e]))
    expect(byType.get('m.room.join_rules|')?.content).to.deep.equal({ join_rule: 'knock' })
    expect(byType.get('m.room.name|')?.content).to.deep.equal({ name: 'Ask first' })
    expect(byType.get('m.room.create|')?.sender).to.equal(alice.user_id)
    expect(byType.get(`m.room.member|${bob.user_id}`)?.content).to.include({ membership: 'knock', reason: 'let me in' })
    expect(byType.has(`m.room.member|${alice.user_id}`), 'other members are not stripped state').to.equal(false)
    expect(bobSync.rooms.join[roomId], 'not joined').to.equal(undefined)
    const initial = await syncAs<SyncBody>(h, bob)
    expect(Object.keys(initial.rooms.knock)).to.include(roomId)

    const aliceSync = await syncAs<SyncBody>(h, alice, { since: aliceBefore.next_batch })
    const knocks = aliceSync.rooms.join[roomId]?.timeline.events.filter((e) => e.type === 'm.room.member' && e.state_key === bob.user_id)
    expect(knocks?.map((e) => e.content['membership'])).to.deep.equal(['knock'])
    const members = await h.call('GET', `${v3}/rooms/${enc(roomId)}/members?membership=knock`, { token: alice.access_token })
    expect(members.json<{ chunk: { state_key: string }[] }>().chunk.map((e) => e.state_key)).to.deep.equal([bob.user_id])

    // The answer: an invite, after which the knock is gone from the knocker's sync and they join.
    expectOk(await action(alice, roomId, 'invite', { user_id: bob.user_id }))
    const invited = await syncAs<SyncBody>(h, bob, { since: bobSync.next_batch })
    expect(Object.keys(invited.rooms.invite)).to.deep.equal([roomId])
    expect(invited.rooms.knock[roomId]).to.equal(undefined)
    await joinAs(h, bob, roomId)
    expect(Object.keys((await syncAs<SyncBody>(h, bob)).rooms.knock)).to.not.include(roomId)
  })

  it('should let moderators turn a knock down (the knocker sees the room in leave), and the knocker withdraw it', async () => {
    const roomId = await knockRoom('knock-denied')
    const before = await syncAs<SyncBody>(h, carol)
    expectOk(await knock(carol, roomId))
    expectOk(await action(alice, roomId, 'kick', { user_id: carol.user_id, reason: 'not now' }))
    const after = await syncAs<SyncBody>(h, carol, { since: before.next_batch })
    expect(Object.keys(after.rooms.leave)).to.include(roomId)
    expect(after.rooms.knock[roomId]).to.equal(undefined)

    // Knocking again, then withdrawing (leave).
    expectOk(await knock(carol, roomId))
    expectOk(await action(carol, roomId, 'leave', {}))
    const members = await h.call('GET', `${v3}/rooms/${enc(roomId)}/members?membership=knock`, { token: alice.access_token })
    expect(members.json<{ chunk: unknown[] }>().chunk).to.deep.equal([])
  })

  it('should refuse with a Matrix error and change nothing: other join rules, members, the banned, unknown rooms, bad input', async () => {
    const publicRoom = await createRoomAs(h, alice, { preset: 'public_chat' })
    const inviteOnly = await createRoomAs(h, alice, { preset: 'private_chat' })
    const knockable = await knockRoom('knock-refusals')
    await joinAs(h, carol, publicRoom)
    expectOk(await action(alice, knockable, 'ban', { user_id: carol.user_id }))
    const cases: [string, Promise<LightMyRequestResponse>, number, string][] = [
      ['public room', knock(bob, publicRoom), 403, 'M_FORBIDDEN'],
      ['invite-only room', knock(bob, inviteOnly), 403, 'M_FORBIDDEN'],
      ['already joined', knock(carol, publicRoom), 403, 'M_FORBIDDEN'],
      ['banned', knock(carol, knockable), 403, 'M_FORBIDDEN'],
      ['unknown room', knock(bob, '!nowhere:hs.test'), 404, 'M_NOT_FOUND'],
      ['unknown alias', knock(bob, '#nowhere:hs.test'), 404, 'M_NOT_FOUND'],
      ['malformed room ID', knock(bob, 'nowhere'), 400, 'M_INVALID_PARAM'],
      ['reason not a string', knock(bob, knockable, { reason: 7 }), 400, 'M_BAD_JSON'],
      ['no token', knock(undefined, knockable), 401, 'M_MISSING_TOKEN'],
    ]
    for (const [name, res, code, errcode] of cases) {
      const answer = await res
      expect([name, answer.statusCode, answer.json().errcode]).to.deep.equal([name, code, errcode])
    }
    const knocks = await h.call('GET', `${v3}/rooms/${enc(knockable)}/members?membership=knock`, { token: alice.access_token })
    expect(knocks.json<{ chunk: unknown[] }>().chunk, 'no knock stored').to.deep.equal([])
  })
})
