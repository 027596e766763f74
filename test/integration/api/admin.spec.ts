import { expect } from 'chai'
import type { LightMyRequestResponse } from 'fastify'
import { adminRoutes } from '../../../api/routes/admin.js'
import { directoryRoutes } from '../../../api/routes/directory.js'
import { roomWriteRoutes } from '../../../api/routes/rooms.js'
import { claimRoomDeletion, roomDeletions, startRoomDeletion, updateRoomDeletion } from '../../../storage/admin.js'
import { startApi, v3, type ApiHarness, type Session } from './api-harness.js'
import { testImage } from '../../support/images.js'
import { createRoomAs, enc, joinAs } from './read-fixtures.js'

const admin1 = '/_synapse/admin/v1'
const admin2 = '/_synapse/admin/v2'

describe("api server admin (Synapse's admin API: users and rooms)", function () {
  this.timeout(60_000)
  let h: ApiHarness
  let root: Session
  let alice: Session
  let bob: Session
  before(async () => {
    h = await startApi({ roomRoutes: (services) => [roomWriteRoutes(services), directoryRoutes(services), adminRoutes(services)] })
    alice = await h.register('ad_alice')
    bob = await h.register('ad_bob')
    root = await h.registerAdmin('ad_root')
  })
  after(() => h.close())

  const as = (session: Session | undefined) => ({ ...(session && { token: session.access_token }) })
  const get = (session: Session | undefined, url: string) => h.call('GET', url, as(session))
  const ok = async <T = Record<string, unknown>>(res: Promise<LightMyRequestResponse>, status = 200): Promise<T> => {
    const answer = await res
    expect(answer.statusCode, answer.body).to.equal(status)
    return answer.json<T>()
  }
  const login = (user: string, password: string) => h.call('POST', `${v3}/login`, { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user }, password } })
  const whoami = (session: Session) => get(session, `${v3}/account/whoami`)

  it('should list and page accounts in the asked order, filtered by name, deactivation and admin flag', async () => {
    const all = await ok<{ users: { name: string; admin: boolean; deactivated: boolean; displayname: string; creation_ts: number }[]; total: number }>(get(root, `${admin2}/users?limit=1000`))
    const names = all.users.map((u) => u.name)
    expect(names).to.include.members([alice.user_id, bob.user_id, root.user_id])
    expect(names).to.deep.equal([...names].sort())
    expect(all.total).to.equal(names.length)
    expect(all.users.find((u) => u.name === root.user_id)).to.include({ admin: true, deactivated: false })
    expect(all.users.find((u) => u.name === alice.user_id)).to.include({ admin: false, displayname: 'ad_alice' })
    expect(all.users.every((u) => u.creation_ts > 1_600_000_000_000), 'milliseconds').to.equal(true)

    // Pages of 1 walk the whole list once, in order, with next_token until the end.
    const walked: string[] = []
    let from: string | undefined = '0'
    while (from !== undefined) {
      const page: { users: { name: string }[]; next_token?: string } = await ok(get(root, `${admin2}/users?limit=1&from=${from}`))
      walked.push(...page.users.map((u) => u.name))
      from = page.next_token
    }
    expect(walked).to.deep.equal(names)
    const backwards = await ok<{ users: { name: string }[] }>(get(root, `${admin2}/users?limit=1000&dir=b`))
    expect(backwards.users.map((u) => u.name)).to.deep.equal([...names].reverse())

    expect((await ok<{ users: { name: string }[] }>(get(root, `${admin2}/users?name=AD_ALI`))).users.map((u) => u.name)).to.deep.equal([alice.user_id])
    expect((await ok<{ users: { name: string }[] }>(get(root, `${admin2}/users?admins=true`))).users.map((u) => u.name)).to.deep.equal([root.user_id])
  })

  it('should create, change, reset, deactivate and reactivate accounts, the user seeing each change', async () => {
    const userId = '@ad_carol:hs.test'
    const created = await ok<{ name: string; displayname: string; admin: boolean }>(h.call('PUT', `${admin2}/users/${enc(userId)}`, { ...as(root), body: { password: 'first-pw', displayname: 'Carol' } }), 201)
    expect(created).to.include({ name: userId, displayname: 'Carol', admin: false })
    const session = await ok<Session>(login('ad_carol', 'first-pw'))

    // Changing the password logs every device out by default; the new one works, the old does not.
    await ok(h.call('PUT', `${admin2}/users/${enc(userId)}`, { ...as(root), body: { password: 'second-pw', admin: true } }))
    expect((await whoami(session)).statusCode).to.equal(401)
    expect((await login('ad_carol', 'first-pw')).statusCode).to.equal(403)
    const second = await ok<Session>(login('ad_carol', 'second-pw'))
    expect(await ok(get(root, `${admin2}/users/${enc(userId)}`))).to.include({ admin: true, deactivated: false })

    await ok(h.call('POST', `${admin1}/reset_password/${enc(userId)}`, { ...as(root), body: { new_password: 'third-pw', logout_devices: false } }))
    expect((await whoami(second)).statusCode, 'logout_devices: false keeps the sessions').to.equal(200)
    await ok(login('ad_carol', 'third-pw'))

    // Deactivation leaves the rooms and ends every session; reactivation needs a password.
    const roomId = await createRoomAs(h, alice, { preset: 'public_chat' })
    await joinAs(h, second, roomId)
    await ok(h.call('POST', `${admin1}/deactivate/${enc(userId)}`, { ...as(root), body: { erase: true } }))
    expect((await whoami(second)).statusCode).to.equal(401)
    expect(await ok(get(root, `${admin2}/users/${enc(userId)}`))).to.include({ deactivated: true, displayname: null })
    const members = await ok<{ members: string[] }>(get(root, `${admin1}/rooms/${enc(roomId)}/members`))
    expect(members.members).to.not.include(userId)
    const listed = await ok<{ users: { name: string }[] }>(get(root, `${admin2}/users?limit=1000`))
    expect(listed.users.map((u) => u.name), 'deactivated accounts are not listed by default').to.not.include(userId)
    const withDeactivated = await ok<{ users: { name: string }[] }>(get(root, `${admin2}/users?limit=1000&deactivated=true`))
    expect(withDeactivated.users.map((u) => u.name)).to.include(userId)

    const noPassword = await h.call('PUT', `${admin2}/users/${enc(userId)}`, { ...as(root), body: { deactivated: false } })
    expect([noPassword.statusCode, noPassword.json().errcode]).to.deep.equal([400, 'M_MISSING_PARAM'])
    await ok(h.call('PUT', `${admin2}/users/${enc(userId)}`, { ...as(root), body: { deactivated: false, password: 'back-pw' } }))
    await ok(login('ad_carol', 'back-pw'))
  })

  it('should read and set the server admin flag, but never let an admin demote themselves', async () => {
    const flag = (userId: string) => ok<{ admin: boolean }>(get(root, `${admin1}/users/${enc(userId)}/admin`))
    expect(await flag(bob.user_id)).to.deep.equal({ admin: false })
    await ok(h.call('PUT', `${admin1}/users/${enc(bob.user_id)}/admin`, { ...as(root), body: { admin: true } }))
    expect(await flag(bob.user_id)).to.deep.equal({ admin: true })
    expect((await get(bob, `${admin2}/users`)).statusCode, 'bob is an admin now').to.equal(200)
    await ok(h.call('PUT', `${admin1}/users/${enc(bob.user_id)}/admin`, { ...as(root), body: { admin: false } }))
    expect((await get(bob, `${admin2}/users`)).statusCode).to.equal(403)
    const self = await h.call('PUT', `${admin1}/users/${enc(root.user_id)}/admin`, { ...as(root), body: { admin: false } })
    expect(self.statusCode).to.equal(400)
    expect(await flag(root.user_id)).to.deep.equal({ admin: true })
  })

  it('should answer whois, the spec\'s and Synapse\'s, to admins and to the user about themselves', async () => {
    const fay = await h.register('ad_fay')
    const paths = [`${v3}/admin/whois/${enc(fay.user_id)}`, `${admin1}/whois/${enc(fay.user_id)}`]
    for (const path of paths) {
      for (const session of [root, fay]) {
        const body = await ok<{ user_id: string; devices: Record<string, { sessions: { connections: { last_seen: number }[] }[] }> }>(get(session, path))
        expect(body.user_id).to.equal(fay.user_id)
        expect(Object.keys(body.devices)).to.deep.equal([fay.device_id])
        expect(body.devices[fay.device_id]!.sessions[0]!.connections[0]!.last_seen).to.be.a('number')
      }
      const other = await get(bob, path)
      expect([path, other.statusCode, other.json().errcode]).to.deep.equal([path, 403, 'M_FORBIDDEN'])
    }
  })

  it("should show a user's joined rooms and devices, and delete a device with its sessions", async () => {
    const dana = await h.register('ad_dana')
    const second = await ok<Session>(login('ad_dana', 'correct horse battery'))
    const roomId = await createRoomAs(h, dana, { preset: 'public_chat' })
    expect(await ok(get(root, `${admin1}/users/${enc(dana.user_id)}/joined_rooms`))).to.deep.equal({ joined_rooms: [roomId], total: 1 })
    const devices = await ok<{ devices: { device_id: string; user_id: string }[]; total: number }>(get(root, `${admin2}/users/${enc(dana.user_id)}/devices`))
    expect(devices.devices.map((d) => d.device_id).sort()).to.deep.equal([dana.device_id, second.device_id].sort())
    expect(devices.total).to.equal(2)
    expect(devices.devices.every((d) => d.user_id === dana.user_id)).to.equal(true)

    await ok(h.call('DELETE', `${admin2}/users/${enc(dana.user_id)}/devices/${second.device_id}`, as(root)))
    expect((await whoami(second)).statusCode, 'its session ended').to.equal(401)
    expect((await whoami(dana)).statusCode, 'the other device stays').to.equal(200)
    expect((await ok<{ total: number }>(get(root, `${admin2}/users/${enc(dana.user_id)}/devices`))).total).to.equal(1)
    const unknown = await get(root, `${admin1}/users/${enc('@nobody:hs.test')}/joined_rooms`)
    expect([unknown.statusCode, unknown.json().errcode]).to.deep.equal([404, 'M_NOT_FOUND'])
    const notAdmin = await get(dana, `${admin2}/users/${enc(dana.user_id)}/devices`)
    expect(notAdmin.statusCode).to.equal(403)
  })

  it("should list a user's files and delete one or all of them, after which they are gone for everyone", async () => {
    const erin = await h.register('ad_erin')
    const upload = async (body: string, type: string) => {
      const res = await h.app.inject({ method: 'POST', url: '/_matrix/media/v3/upload?filename=f.txt', headers: { authorization: `Bearer ${erin.access_token}`, 'content-type': type }, payload: body })
      expect(res.statusCode, res.body).to.equal(200)
      // A millisecond apart at least: the list is ordered by upload time.
      await new Promise((resolve) => setTimeout(resolve, 3))
      return res.json<{ content_uri: string }>().content_uri.split('/').pop() as string
    }
    const ids = [await upload('one', 'text/plain'), await upload('two!', 'application/json'), await upload('three', 'text/plain')]
    const download = (id: string) => get(alice, `/_matrix/client/v1/media/download/hs.test/${id}`)
    const listed = await ok<{ media: { media_id: string; media_type: string; media_length: number; upload_name: string }[]; total: number }>(get(root, `${admin1}/users/${enc(erin.user_id)}/media?dir=f`))
    expect(listed.total).to.equal(3)
    expect(listed.media.map((m) => [m.media_id, m.media_type, m.media_length, m.upload_name])).to.deep.equal([
      [ids[0], 'text/plain', 3, 'f.txt'],
      [ids[1], 'application/json', 4, 'f.txt'],
      [ids[2], 'text/plain', 5, 'f.txt'],
    ])
    const page = await ok<{ media: { media_id: string }[]; next_token?: number }>(get(root, `${admin1}/users/${enc(erin.user_id)}/media?limit=2`))
    expect([page.media.map((m) => m.media_id), page.next_token]).to.deep.equal([[ids[2], ids[1]], 2])

    expect(await ok(h.call('DELETE', `${admin1}/media/hs.test/${ids[0]}`, as(root)))).to.deep.equal({ deleted_media: [ids[0]], total: 1 })
    expect((await download(ids[0]!)).statusCode).to.equal(404)
    expect((await download(ids[1]!)).statusCode).to.equal(200)
    const rest = await ok<{ deleted_media: string[]; total: number }>(h.call('DELETE', `${admin1}/users/${enc(erin.user_id)}/media`, as(root)))
    expect(rest).to.deep.equal({ deleted_media: [ids[1], ids[2]].sort(), total: 2 })
    expect((await download(ids[2]!)).statusCode).to.equal(404)
    for (const [what, res, code] of [
      ['unknown media', h.call('DELETE', `${admin1}/media/hs.test/${ids[0]}`, as(root)), 404],
      ['remote media', h.call('DELETE', `${admin1}/media/other.test/abc`, as(root)), 400],
      ['not an admin', h.call('DELETE', `${admin1}/users/${enc(erin.user_id)}/media`, as(erin)), 403],
    ] as const) {
      expect([what, (await res).statusCode]).to.deep.equal([what, code])
    }
  })

  it("should quarantine a file, a room's files and a user's, spare protected ones, and delete old files but avatars", async () => {
    const fay = await h.register('ad_quinn')
    const gil = await h.register('ad_rex')
    const upload = async (session: Session, body: string, type = 'text/plain') => {
      const res = await h.app.inject({ method: 'POST', url: '/_matrix/media/v3/upload', headers: { authorization: `Bearer ${session.access_token}`, 'content-type': type }, payload: body })
      expect(res.statusCode, res.body).to.equal(200)
      return res.json<{ content_uri: string }>().content_uri.split('/').pop() as string
    }
    const served = async (id: string) => (await get(gil, `/_matrix/client/v1/media/download/hs.test/${id}`)).statusCode
    const info = async (id: string) => (await ok<{ media_info: { quarantined_by: string | null; safe_from_quarantine: boolean } }>(get(root, `${admin1}/media/hs.test/${id}`))).media_info

    // One file.
    const one = await upload(fay, 'one')
    expect(await ok(h.call('POST', `${admin1}/media/quarantine/hs.test/${one}`, as(root)))).to.deep.equal({})
    expect([await served(one), (await info(one)).quarantined_by]).to.deep.equal([404, root.user_id])
    expect(await ok(h.call('POST', `${admin1}/media/unquarantine/hs.test/${one}`, as(root)))).to.deep.equal({})
    expect([await served(one), (await info(one)).quarantined_by]).to.deep.equal([200, null])
    // An image's kept thumbnails are not served either while it is quarantined.
    const image = (await h.app.inject({ method: 'POST', url: '/_matrix/media/v3/upload', headers: { authorization: `Bearer ${fay.access_token}`, 'content-type': 'image/png' }, payload: await testImage(200, 200, 'image/png') })).json<{ content_uri: string }>().content_uri.split('/').pop() as string
    const thumbnail = async () => (await get(gil, `/_matrix/client/v1/media/thumbnail/hs.test/${image}?width=32&height=32&method=crop`)).statusCode
    expect(await thumbnail()).to.equal(200)
    await ok(h.call('POST', `${admin1}/media/quarantine/hs.test/${image}`, as(root)))
    expect(await thumbnail()).to.equal(404)

    // A room's files: those its events name, this server's only; a protected one is spared.
    const roomId = await createRoomAs(h, fay, { name: 'files' })
    const [pic, doc, kept, elsewhere] = [await upload(fay, 'pic'), await upload(gil, 'doc'), await upload(fay, 'kept'), await upload(fay, 'elsewhere')]
    const send = (content: Record<string, unknown>, txn: string) => h.call('PUT', `${v3}/rooms/${enc(roomId)}/send/m.room.message/${txn}`, { token: fay.access_token, body: content })
    expect((await send({ msgtype: 'm.image', body: 'p', url: `mxc://hs.test/${pic}`, info: { thumbnail_url: `mxc://hs.test/${doc}` } }, 'q1')).statusCode).to.equal(200)
    expect((await send({ msgtype: 'm.file', body: 'k', url: `mxc://hs.test/${kept}` }, 'q2')).statusCode).to.equal(200)
    expect((await send({ msgtype: 'm.file', body: 'remote', url: `mxc://hsXtest/${elsewhere}` }, 'q3')).statusCode).to.equal(200)
    expect(await ok(h.call('POST', `${admin1}/media/protect/${kept}`, as(root)))).to.deep.equal({})
    expect(await ok(h.call('POST', `${admin1}/room/${enc(roomId)}/media/quarantine`, as(root)))).to.deep.equal({ num_quarantined: 2 })
    expect([await served(pic), await served(doc), await served(kept), await served(elsewhere)]).to.deep.equal([404, 404, 200, 200])
    expect((await info(kept)).safe_from_quarantine).to.equal(true)

    // A user's files; already quarantined ones are not counted twice.
    expect(await ok(h.call('POST', `${admin1}/user/${enc(fay.user_id)}/media/quarantine`, as(root)))).to.deep.equal({ num_quarantined: 2 })
    expect([await served(one), await served(elsewhere), await served(kept)]).to.deep.equal([404, 404, 200])
    const listed = await ok<{ media: { media_id: string; quarantined_by: string | null }[] }>(get(root, `${admin1}/users/${enc(fay.user_id)}/media?limit=100`))
    expect(listed.media.filter((m) => m.quarantined_by === root.user_id).map((m) => m.media_id).sort()).to.deep.equal([one, pic, elsewhere, image].sort())

    // Retention: files before a date go, but protected ones and avatars (with keep_profiles, the default).
    const avatar = await upload(gil, 'avatar')
    expect((await h.call('PUT', `${v3}/profile/${enc(gil.user_id)}/avatar_url`, { token: gil.access_token, body: { avatar_url: `mxc://hs.test/${avatar}` } })).statusCode).to.equal(200)
    const cutoff = Date.now() + 1
    await new Promise((resolve) => setTimeout(resolve, 5))
    const fresh = await upload(gil, 'fresh')
    const deleted = await ok<{ deleted_media: string[]; total: number }>(h.call('POST', `${admin1}/media/delete?before_ts=${cutoff}`, as(root)))
    expect(deleted.deleted_media).to.include.members([one, pic, doc, elsewhere])
    expect(deleted.deleted_media).to.not.include.members([kept])
    expect(deleted.deleted_media.includes(avatar) || deleted.deleted_media.includes(fresh)).to.equal(false)
    expect([await served(avatar), await served(fresh), await served(kept)]).to.deep.equal([200, 200, 200])
    const withAvatars = await ok<{ deleted_media: string[] }>(h.call('POST', `${admin1}/media/hs.test/delete?before_ts=${cutoff}&keep_profiles=false`, as(root)))
    expect(withAvatars.deleted_media).to.include(avatar)

    for (const [what, res, code] of [
      ['unknown media', h.call('POST', `${admin1}/media/quarantine/hs.test/nope`, as(root)), 404],
      ['remote media', h.call('POST', `${admin1}/media/quarantine/other.test/${kept}`, as(root)), 400],
      ['no date', h.call('POST', `${admin1}/media/delete`, as(root)), 400],
      ['not an admin', h.call('POST', `${admin1}/user/${enc(fay.user_id)}/media/quarantine`, as(fay)), 403],
      ['protect unknown', h.call('POST', `${admin1}/media/protect/nope`, as(root)), 404],
    ] as const) {
      expect([what, (await res).statusCode]).to.deep.equal([what, code])
    }
  })

  it('should list rooms with their summaries, page and search them, and show one room, its members and state', async () => {
    const lobby = await createRoomAs(h, alice, { preset: 'public_chat', name: 'Zeta lobby', room_alias_name: 'ad-lobby', visibility: 'public' })
    await joinAs(h, bob, lobby)
    const quiet = await createRoomAs(h, bob, { name: 'Alpha quiet' })
    const rooms = await ok<{ rooms: { room_id: string; name: string | null; joined_members: number }[]; total_rooms: number; offset: number }>(get(root, `${admin1}/rooms?limit=1000`))
    expect(rooms.total_rooms).to.equal(rooms.rooms.length)
    const names = rooms.rooms.map((r) => r.name)
    expect(names.indexOf('Alpha quiet')).to.be.lessThan(names.indexOf('Zeta lobby'))
    const summary = rooms.rooms.find((r) => r.room_id === lobby)
    expect(summary).to.deep.include({ name: 'Zeta lobby', canonical_alias: '#ad-lobby:hs.test', joined_members: 2, joined_local_members: 2, version: '11', creator: alice.user_id, public: true, join_rules: 'public', federatable: true })

    const byMembers = await ok<{ rooms: { joined_members: number }[] }>(get(root, `${admin1}/rooms?limit=1000&order_by=joined_members&dir=b`))
    const counts = byMembers.rooms.map((r) => r.joined_members)
    expect(counts).to.deep.equal([...counts].sort((a, b) => b - a))
    const page = await ok<{ rooms: unknown[]; next_batch?: number; prev_batch?: number }>(get(root, `${admin1}/rooms?limit=1&from=1`))
    expect(page.rooms).to.have.length(1)
    expect(page.prev_batch).to.equal(0)
    expect((await ok<{ rooms: { room_id: string }[] }>(get(root, `${admin1}/rooms?search_term=ALPHA`))).rooms.map((r) => r.room_id)).to.deep.equal([quiet])

    expect(await ok(get(root, `${admin1}/rooms/${enc(lobby)}`))).to.include({ room_id: lobby, name: 'Zeta lobby', joined_members: 2 })
    expect(await ok(get(root, `${admin1}/rooms/${enc(lobby)}/members`))).to.deep.equal({ members: [alice.user_id, bob.user_id].sort(), total: 2 })
    const state = await ok<{ state: { type: string; state_key: string }[] }>(get(root, `${admin1}/rooms/${enc(lobby)}/state`))
    expect(state.state.map((e) => `${e.type}|${e.state_key}`)).to.include.members(['m.room.create|', 'm.room.name|', `m.room.member|${bob.user_id}`])
  })

  it("should make a user a room admin through the room's most powerful member, inviting them into a private room", async () => {
    const roomId = await createRoomAs(h, alice, { preset: 'private_chat' })
    await ok(h.call('POST', `${admin1}/rooms/${enc(roomId)}/make_room_admin`, { ...as(root), body: { user_id: bob.user_id } }))
    const state = await ok<{ state: { type: string; state_key: string; sender: string; content: Record<string, unknown> }[] }>(get(root, `${admin1}/rooms/${enc(roomId)}/state`))
    const levels = state.state.find((e) => e.type === 'm.room.power_levels')!
    expect(levels.sender).to.equal(alice.user_id)
    expect(levels.content['users']).to.deep.include({ [bob.user_id]: 100 })
    expect(state.state.find((e) => e.type === 'm.room.member' && e.state_key === bob.user_id)?.content).to.include({ membership: 'invite' })
    await joinAs(h, bob, roomId)
    // Bob may now do what only an admin may: change the power levels.
    const change = await h.call('PUT', `${v3}/rooms/${enc(roomId)}/state/m.room.power_levels/`, { ...as(bob), body: { ...levels.content, users_default: 10 } })
    expect(change.statusCode, change.body).to.equal(200)

    // With nobody left who may grant power, a Matrix error and no change.
    const orphan = await createRoomAs(h, alice, { preset: 'public_chat' })
    await joinAs(h, bob, orphan)
    await ok(h.call('POST', `${v3}/rooms/${enc(orphan)}/leave`, { ...as(alice), body: {} }))
    const refused = await h.call('POST', `${admin1}/rooms/${enc(orphan)}/make_room_admin`, { ...as(root), body: { user_id: bob.user_id } })
    expect([refused.statusCode, refused.json().errcode]).to.deep.equal([400, 'M_UNKNOWN'])
    const notAdmin = await h.call('POST', `${admin1}/rooms/${enc(orphan)}/make_room_admin`, { ...as(bob), body: { user_id: bob.user_id } })
    expect(notAdmin.statusCode).to.equal(403)
  })

  describe('blocking and deleting rooms', () => {
    const del = (session: Session | undefined, roomId: string, body: unknown) => h.call('DELETE', `${admin1}/rooms/${enc(roomId)}`, { ...as(session), body })
    const block = (roomId: string, value: boolean) => h.call('PUT', `${admin1}/rooms/${enc(roomId)}/block`, { ...as(root), body: { block: value } })
    const eventCount = async (roomId: string) => Number((await h.t.db.selectFrom('events').select((eb) => eb.fn.countAll<string>().as('n')).where('room_id', '=', roomId).executeTakeFirstOrThrow()).n)
    const membershipAction = (session: Session, roomId: string, action: string, body: unknown = {}) => h.call('POST', `${v3}/rooms/${enc(roomId)}/${action}`, { ...as(session), body })

    it('should block a room to local joins, knocks and invites until unblocked', async () => {
      const roomId = await createRoomAs(h, alice, { preset: 'public_chat' })
      expect(await ok(get(root, `${admin1}/rooms/${enc(roomId)}/block`))).to.deep.equal({ block: false })
      await ok(block(roomId, true))
      expect(await ok(get(root, `${admin1}/rooms/${enc(roomId)}/block`))).to.deep.equal({ block: true, user_id: root.user_id })
      for (const [what, res] of [
        ['join', membershipAction(bob, roomId, 'join')],
        ['join by ID', h.call('POST', `${v3}/join/${enc(roomId)}`, { ...as(bob), body: {} })],
        ['knock', h.call('POST', `${v3}/knock/${enc(roomId)}`, { ...as(bob), body: {} })],
        ['invite', membershipAction(alice, roomId, 'invite', { user_id: bob.user_id })],
      ] as const) {
        const answer = await res
        expect([what, answer.statusCode, answer.json().errcode]).to.deep.equal([what, 403, 'M_FORBIDDEN'])
      }
      await ok(block(roomId, false))
      await ok(membershipAction(bob, roomId, 'join'))
    })

    it('should remove every member, move them and the aliases to a new room, block and purge the old one', async () => {
      const roomId = await createRoomAs(h, alice, { preset: 'public_chat', name: 'Doomed', room_alias_name: 'ad-doomed', visibility: 'public' })
      await joinAs(h, bob, roomId)
      const carol = await h.register('ad_carol2')
      await ok(membershipAction(alice, roomId, 'invite', { user_id: carol.user_id }))
      expect(await eventCount(roomId)).to.be.greaterThan(5)

      const answer = await ok<{ kicked_users: string[]; failed_to_kick_users: string[]; local_aliases: string[]; new_room_id: string }>(
        del(root, roomId, { new_room_user_id: root.user_id, room_name: 'Moved', message: 'This room was removed.', block: true }),
      )
      expect(answer).to.deep.include({ kicked_users: [alice.user_id, bob.user_id, carol.user_id].sort(), failed_to_kick_users: [], local_aliases: ['#ad-doomed:hs.test'] })
      expect(await eventCount(roomId), 'purged').to.equal(0)
      expect((await get(root, `${admin1}/rooms/${enc(roomId)}`)).statusCode).to.equal(404)
      expect((await get(root, `${admin1}/rooms/${enc(roomId)}/block`)).json()).to.include({ block: true })
      expect((await membershipAction(bob, roomId, 'join')).statusCode, 'gone').to.equal(404)

      // The joined members are in the new room, which carries the message and the alias; the invitee is not.
      const moved = answer.new_room_id
      expect(await ok(get(root, `${admin1}/rooms/${enc(moved)}/members`))).to.deep.equal({ members: [alice.user_id, bob.user_id, root.user_id].sort(), total: 3 })
      expect((await get(bob, `${v3}/directory/room/${enc('#ad-doomed:hs.test')}`)).json()).to.include({ room_id: moved })
      const messages = await h.t.db.selectFrom('events').select('type').where('room_id', '=', moved).where('type', '=', 'm.room.message').execute()
      expect(messages).to.have.length(1)
      const refused = await h.call('PUT', `${v3}/rooms/${enc(moved)}/send/m.room.message/t1`, { ...as(bob), body: { msgtype: 'm.text', body: 'hi' } })
      expect(refused.statusCode, 'members of the notice room may not speak').to.equal(403)
    })

    it('should delete a room asynchronously (v2): a delete_id at once, its status from the database until complete', async () => {
      const roomId = await createRoomAs(h, alice, { preset: 'public_chat', room_alias_name: 'ad-async' })
      await joinAs(h, bob, roomId)
      const { delete_id: deleteId } = await ok<{ delete_id: string }>(h.call('DELETE', `/_synapse/admin/v2/rooms/${enc(roomId)}`, { ...as(root), body: { block: true } }))
      expect(deleteId).to.match(/^[A-Za-z0-9]{16}$/)
      let status: { status: string; shutdown_room?: unknown } = { status: 'shutting_down' }
      const deadline = Date.now() + 10_000
      while (status.status !== 'complete' && status.status !== 'failed' && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 20))
        status = await ok(get(root, `/_synapse/admin/v2/rooms/delete_status/${deleteId}`))
      }
      expect(status).to.deep.equal({
        status: 'complete',
        shutdown_room: { kicked_users: [alice.user_id, bob.user_id].sort(), failed_to_kick_users: [], local_aliases: ['#ad-async:hs.test'], new_room_id: null },
      })
      expect(await eventCount(roomId), 'purged').to.equal(0)
      const byRoom = await ok<{ results: { delete_id: string; status: string }[] }>(get(root, `/_synapse/admin/v2/rooms/${enc(roomId)}/delete_status`))
      expect(byRoom.results.map((r) => [r.delete_id, r.status])).to.deep.equal([[deleteId, 'complete']])
      for (const url of ['/_synapse/admin/v2/rooms/delete_status/nope', `/_synapse/admin/v2/rooms/${enc('!never:hs.test')}/delete_status`]) {
        const missing = await get(root, url)
        expect([url, missing.statusCode, missing.json().errcode]).to.deep.equal([url, 404, 'M_NOT_FOUND'])
      }
      const refused = await h.call('DELETE', `/_synapse/admin/v2/rooms/${enc(roomId)}`, { ...as(bob), body: {} })
      expect(refused.statusCode).to.equal(403)
    })

    it('should resume a v2 deletion whose process stopped, unless a process still runs it', async () => {
      const roomId = await createRoomAs(h, alice, { preset: 'public_chat', room_alias_name: 'ad-resumed' })
      await joinAs(h, bob, roomId)
      const statusOf = async (deleteId: string) => (await ok<{ status: string; shutdown_room?: unknown }>(get(root, `${admin2}/rooms/delete_status/${deleteId}`))).status
      const until = async (deleteId: string, wanted: string) => {
        let status = await statusOf(deleteId)
        for (const deadline = Date.now() + 10_000; status !== wanted && Date.now() < deadline; status = await statusOf(deleteId)) {
          await new Promise((resolve) => setTimeout(resolve, 20))
        }
        return status
      }

      // As a process leaves a deletion it was running when it died: recorded, nothing done yet.
      const held = 'resumeHeld000001'
      await startRoomDeletion(h.t.db, { deleteId: held, roomId, now: Date.now(), params: { purge: true } })
      // While another session holds the deletion's claim (its process is alive), asking the status
      // resumes nothing.
      await claimRoomDeletion(h.t.db, held, async () => {
        for (let i = 0; i < 5; i++) {
          expect(await statusOf(held)).to.equal('shutting_down')
          await new Promise((resolve) => setTimeout(resolve, 20))
        }
        expect(await eventCount(roomId), 'not purged while claimed').to.be.greaterThan(0)
      })
      // Once it is let go (the process died), the next status request resumes it to the end.
      expect(await until(held, 'complete')).to.equal('complete')
      expect(await eventCount(roomId), 'purged').to.equal(0)
      const [done] = await roomDeletions(h.t.db, { deleteId: held })
      expect(done?.shutdown_room).to.deep.include({ kicked_users: [alice.user_id, bob.user_id].sort(), local_aliases: ['#ad-resumed:hs.test'] })

      // A deletion stopped after its shutdown goes on with the purge, with the shutdown it recorded.
      const second = await createRoomAs(h, alice, { preset: 'public_chat' })
      const shutdown = { kicked_users: [alice.user_id], failed_to_kick_users: [], local_aliases: [], new_room_id: null }
      await startRoomDeletion(h.t.db, { deleteId: 'resumePurge00001', roomId: second, now: Date.now(), params: {} })
      await updateRoomDeletion(h.t.db, 'resumePurge00001', { status: 'purging', shutdown })
      expect(await until('resumePurge00001', 'complete')).to.equal('complete')
      expect(await eventCount(second)).to.equal(0)
      expect((await roomDeletions(h.t.db, { deleteId: 'resumePurge00001' }))[0]?.shutdown_room).to.deep.equal(shutdown)

      // A finished deletion is never run again.
      expect(await claimRoomDeletion(h.t.db, held, async ({ status }) => {
        expect(status).to.equal('complete')
      })).to.equal(true)
    })

    it('should keep the room without purge, delete its aliases, and answer 404 for an unknown room unless it is only blocked', async () => {
      const roomId = await createRoomAs(h, alice, { preset: 'public_chat', room_alias_name: 'ad-kept' })
      await joinAs(h, bob, roomId)
      const answer = await ok<{ kicked_users: string[]; new_room_id: null; local_aliases: string[] }>(del(root, roomId, { purge: false }))
      expect(answer).to.deep.include({ kicked_users: [alice.user_id, bob.user_id].sort(), new_room_id: null, local_aliases: ['#ad-kept:hs.test'] })
      expect(await ok(get(root, `${admin1}/rooms/${enc(roomId)}/members`))).to.deep.equal({ members: [], total: 0 })
      const alias = await get(bob, `${v3}/directory/room/${enc('#ad-kept:hs.test')}`)
      expect([alias.statusCode, alias.json().errcode]).to.deep.equal([404, 'M_NOT_FOUND'])
      expect(await eventCount(roomId)).to.be.greaterThan(0)

      const unknown = await del(root, '!unknown:hs.test', {})
      expect([unknown.statusCode, unknown.json().errcode]).to.deep.equal([404, 'M_NOT_FOUND'])
      await ok(del(root, '!future:hs.test', { block: true }))
      expect((await get(root, `${admin1}/rooms/${enc('!future:hs.test')}/block`)).json()).to.include({ block: true })
      const notAdmin = await del(bob, roomId, {})
      expect([notAdmin.statusCode, notAdmin.json().errcode]).to.deep.equal([403, 'M_FORBIDDEN'])
    })
  })

  it('should answer everyone but server admins 401 or 403, and refuse bad input with a Matrix error, changing nothing', async () => {
    const routes: [string, string, unknown?][] = [
      ['GET', `${admin1}/server_version`],
      ['GET', `${admin2}/users`],
      ['GET', `${admin2}/users/${enc(alice.user_id)}`],
      ['PUT', `${admin2}/users/${enc(alice.user_id)}`, { admin: true }],
      ['POST', `${admin1}/deactivate/${enc(alice.user_id)}`, {}],
      ['POST', `${admin1}/reset_password/${enc(alice.user_id)}`, { new_password: 'x-pw' }],
      ['GET', `${admin1}/rooms`],
    ]
    for (const [method, url, body] of routes) {
      const anonymous = await h.call(method as 'GET', url, { ...(body !== undefined && { body }) })
      expect([url, anonymous.statusCode, anonymous.json().errcode]).to.deep.equal([url, 401, 'M_MISSING_TOKEN'])
      const user = await h.call(method as 'GET', url, { ...as(bob), ...(body !== undefined && { body }) })
      expect([url, user.statusCode, user.json().errcode]).to.deep.equal([url, 403, 'M_FORBIDDEN'])
    }
    expect(await ok(get(root, `${admin1}/server_version`))).to.have.property('server_version')
    expect((await whoami(alice)).statusCode, 'alice untouched').to.equal(200)
    expect(await ok(get(root, `${admin2}/users/${enc(alice.user_id)}`))).to.include({ admin: false })

    const cases: [string, Promise<LightMyRequestResponse>, number, string][] = [
      ['unknown user', get(root, `${admin2}/users/${enc('@nobody:hs.test')}`), 404, 'M_NOT_FOUND'],
      ['remote user', get(root, `${admin2}/users/${enc('@alice:other.test')}`), 400, 'M_INVALID_PARAM'],
      ['malformed user ID', get(root, `${admin2}/users/alice`), 400, 'M_INVALID_PARAM'],
      ['bad localpart', h.call('PUT', `${admin2}/users/${enc('@Upper:hs.test')}`, { ...as(root), body: { password: 'pw-x' } }), 400, 'M_INVALID_USERNAME'],
      ['admin not a boolean', h.call('PUT', `${admin2}/users/${enc(alice.user_id)}`, { ...as(root), body: { admin: 'yes' } }), 400, 'M_BAD_JSON'],
      ['unknown order', get(root, `${admin2}/users?order_by=shoe_size`), 400, 'M_INVALID_PARAM'],
      ['bad limit', get(root, `${admin1}/rooms?limit=-3`), 400, 'M_INVALID_PARAM'],
      ['unknown room', get(root, `${admin1}/rooms/${enc('!nowhere:hs.test')}`), 404, 'M_NOT_FOUND'],
      ['deactivate unknown user', h.call('POST', `${admin1}/deactivate/${enc('@nobody:hs.test')}`, { ...as(root), body: {} }), 404, 'M_NOT_FOUND'],
      ['reset without a password', h.call('POST', `${admin1}/reset_password/${enc(alice.user_id)}`, { ...as(root), body: {} }), 400, 'M_BAD_JSON'],
    ]
    for (const [name, res, code, errcode] of cases) {
      const answer = await res
      expect([name, answer.statusCode, answer.json().errcode]).to.deep.equal([name, code, errcode])
    }
    expect((await whoami(alice)).statusCode, 'alice untouched').to.equal(200)
  })
})
