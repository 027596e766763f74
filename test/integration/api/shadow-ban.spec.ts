import { expect } from 'chai'
import { adminRoutes } from '../../../api/routes/admin.js'
import { roomWriteRoutes } from '../../../api/routes/rooms.js'
import { startApi, v3, type ApiHarness, type Session } from './api-harness.js'
import { createRoomAs, enc, joinAs } from './read-fixtures.js'

describe('api shadow bans (admin API shadow_ban)', function () {
  this.timeout(60_000)
  let h: ApiHarness
  let root: Session
  let mallory: Session
  let bob: Session
  let room: string
  before(async () => {
    h = await startApi({ roomRoutes: (services) => [roomWriteRoutes(services), adminRoutes(services)] })
    root = await h.registerAdmin('sb_root')
    mallory = await h.register('sb_mallory')
    bob = await h.register('sb_bob')
    room = await createRoomAs(h, bob, { preset: 'public_chat' })
    await joinAs(h, mallory, room)
  })
  after(() => h.close())

  const ban = (method: 'POST' | 'DELETE', userId: string, session = root) => h.call(method, `/_synapse/admin/v1/users/${enc(userId)}/shadow_ban`, { token: session.access_token })
  const as = (session: Session) => ({ token: session.access_token })
  let txn = 0
  const send = (body: string) => h.call('PUT', `${v3}/rooms/${enc(room)}/send/m.room.message/sb${++txn}`, { ...as(mallory), body: { msgtype: 'm.text', body } })
  const eventsBy = async (userId: string, roomId = room) =>
    (await h.t.db.selectFrom('events').select(['event_id', 'type']).where('room_id', '=', roomId).where('sender', '=', userId).orderBy('stream_ordering').execute()).map((e) => e.type)
  const membershipOf = async (roomId: string, userId: string) =>
    (await h.t.db.selectFrom('current_state_events').select('membership').where('room_id', '=', roomId).where('type', '=', 'm.room.member').where('state_key', '=', userId).executeTakeFirst())?.membership

  it("should answer a shadow-banned user's sends, state, redactions, invites and typing as if they worked, and keep none of them", async () => {
    const kept = await send('before the ban')
    expect(kept.statusCode).to.equal(200)
    const before = await eventsBy(mallory.user_id)

    expect((await ban('POST', mallory.user_id)).statusCode).to.equal(200)
    const summary = (await h.call('GET', `/_synapse/admin/v2/users/${enc(mallory.user_id)}`, as(root))).json<{ shadow_banned: boolean }>()
    expect(summary.shadow_banned).to.equal(true)

    const spam = await send('buy cheap watches')
    expect(spam.statusCode).to.equal(200)
    expect(spam.json<{ event_id: string }>().event_id).to.match(/^\$[A-Za-z0-9_-]{43}$/)
    const topic = await h.call('PUT', `${v3}/rooms/${enc(room)}/state/m.room.topic`, { ...as(mallory), body: { topic: 'spam' } })
    expect(topic.statusCode).to.equal(200)
    const redaction = await h.call('PUT', `${v3}/rooms/${enc(room)}/redact/${enc(kept.json<{ event_id: string }>().event_id)}/sb-r1`, { ...as(mallory), body: {} })
    expect(redaction.statusCode).to.equal(200)
    const carol = await h.register('sb_carol')
    expect((await h.call('POST', `${v3}/rooms/${enc(room)}/invite`, { ...as(mallory), body: { user_id: carol.user_id } })).statusCode).to.equal(200)
    expect((await h.call('PUT', `${v3}/rooms/${enc(room)}/typing/${enc(mallory.user_id)}`, { ...as(mallory), body: { typing: true, timeout: 30_000 } })).statusCode).to.equal(200)

    expect(await eventsBy(mallory.user_id), 'nothing stored').to.deep.equal(before)
    expect(await membershipOf(room, carol.user_id), 'no invite').to.equal(undefined)
    expect(await h.t.db.selectFrom('typing').selectAll().where('user_id', '=', mallory.user_id).execute()).to.deep.equal([])

    // They can still make rooms, without the invites; joins and leaves still work.
    const own = await createRoomAs(h, mallory, { preset: 'private_chat', invite: [bob.user_id] })
    expect(await membershipOf(own, mallory.user_id)).to.equal('join')
    expect(await membershipOf(own, bob.user_id)).to.equal(undefined)
    expect((await h.call('POST', `${v3}/rooms/${enc(room)}/leave`, { ...as(mallory), body: {} })).statusCode).to.equal(200)
    await joinAs(h, mallory, room)

    // Lifted: what they send is kept again.
    expect((await ban('DELETE', mallory.user_id)).statusCode).to.equal(200)
    const after = await send('after the ban')
    expect(after.statusCode).to.equal(200)
    expect((await eventsBy(mallory.user_id)).filter((type) => type === 'm.room.message')).to.have.length(before.filter((type) => type === 'm.room.message').length + 1)
    expect((await h.call('GET', `/_synapse/admin/v2/users/${enc(mallory.user_id)}`, as(root))).json<{ shadow_banned: boolean }>().shadow_banned).to.equal(false)
  })

  it('should refuse non-admins, unknown and remote users with Matrix errors', async () => {
    const refused = await ban('POST', bob.user_id, mallory)
    expect([refused.statusCode, refused.json().errcode]).to.deep.equal([403, 'M_FORBIDDEN'])
    const unknown = await ban('POST', '@nobody:hs.test')
    expect([unknown.statusCode, unknown.json().errcode]).to.deep.equal([404, 'M_NOT_FOUND'])
    expect((await ban('POST', '@someone:elsewhere.test')).statusCode).to.equal(400)
    expect((await h.call('GET', `/_synapse/admin/v2/users/${enc(bob.user_id)}`, as(root))).json<{ shadow_banned: boolean }>().shadow_banned).to.equal(false)
  })
})
