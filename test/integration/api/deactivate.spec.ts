import { expect } from 'chai'
import { roomPlugins } from '../../../api/room-plugins.js'
import { getCurrentState } from '../../../storage/events/event-store.js'
import { startApi, v3, type ApiHarness, type Session } from './api-harness.js'

const enc = encodeURIComponent
const password = 'correct horse battery'

describe('api account deactivation', function () {
  this.timeout(60_000)
  let h: ApiHarness
  before(async () => {
    h = await startApi({ roomRoutes: (services) => roomPlugins(services) })
  })
  after(() => h.close())

  const call = (method: 'POST' | 'PUT' | 'GET', session: Session | undefined, path: string, body?: unknown) =>
    h.call(method, `${v3}${path}`, { ...(session && { token: session.access_token }), ...(body !== undefined && { body }) })
  const passwordAuth = (session: Session, secret = password) => ({ type: 'm.login.password', identifier: { type: 'm.id.user', user: session.user_id }, password: secret })
  const membershipOf = async (roomId: string, userId: string) =>
    (await getCurrentState(h.t.db, roomId)).find((s) => s.type === 'm.room.member' && s.stateKey === userId)?.content['membership']
  async function createRoom(session: Session, body: Record<string, unknown> = {}): Promise<string> {
    const res = await call('POST', session, '/createRoom', body)
    expect(res.statusCode, res.body).to.equal(200)
    return res.json().room_id as string
  }

  it('should ask for the password, then leave every room, refuse every token and login, and keep the user ID taken', async () => {
    const alice = await h.register('alice')
    const bob = await h.register('bob')
    const joined = await createRoom(alice, { preset: 'public_chat' })
    expect((await call('POST', bob, `/join/${enc(joined)}`, {})).statusCode).to.equal(200)
    const own = await createRoom(bob, { name: "bob's" })
    const invited = await createRoom(alice, { invite: [bob.user_id] })
    const second = await call('POST', undefined, '/login', { type: 'm.login.password', identifier: { type: 'm.id.user', user: 'bob' }, password })
    expect(second.statusCode).to.equal(200)
    const otherDevice = second.json().access_token as string

    // bob types in the room he will leave by deactivating (for two minutes).
    expect((await call('PUT', bob, `/rooms/${enc(joined)}/typing/${enc(bob.user_id)}`, { typing: true, timeout: 120_000 })).statusCode).to.equal(200)
    const typists = async () => {
      const res = await call('GET', alice, `/sync?filter=${enc(JSON.stringify({ room: { rooms: [joined], timeline: { limit: 1 } } }))}`)
      const events = (res.json().rooms.join[joined]?.ephemeral.events ?? []) as { type: string; content: { user_ids: string[] } }[]
      return events.find((e) => e.type === 'm.typing')?.content.user_ids ?? []
    }
    expect(await typists()).to.deep.equal([bob.user_id])

    const asked = await call('POST', bob, '/account/deactivate', {})
    expect([asked.statusCode, asked.json().flows]).to.deep.equal([401, [{ stages: ['m.login.password'] }]])
    const wrong = await call('POST', bob, '/account/deactivate', { auth: { ...passwordAuth(bob, 'wrong'), session: asked.json().session } })
    expect([wrong.statusCode, wrong.json().errcode]).to.deep.equal([401, 'M_FORBIDDEN'])
    const forOther = await call('POST', bob, '/account/deactivate', { auth: passwordAuth(alice) })
    expect([forOther.statusCode, forOther.json().errcode]).to.deep.equal([403, 'M_FORBIDDEN'])
    expect((await call('GET', bob, '/account/whoami')).statusCode, 'nothing happened yet').to.equal(200)

    const done = await call('POST', bob, '/account/deactivate', { auth: { ...passwordAuth(bob), session: asked.json().session } })
    expect([done.statusCode, done.json()]).to.deep.equal([200, { id_server_unbind_result: 'no-support' }])

    for (const roomId of [joined, own, invited]) expect(await membershipOf(roomId, bob.user_id), roomId).to.equal('leave')
    expect(await typists(), 'bob stopped typing when he left').to.deep.equal([])
    for (const token of [bob.access_token, otherDevice]) {
      const res = await h.call('GET', `${v3}/account/whoami`, { token })
      expect([res.statusCode, res.json().errcode]).to.deep.equal([401, 'M_UNKNOWN_TOKEN'])
    }
    const login = await call('POST', undefined, '/login', { type: 'm.login.password', identifier: { type: 'm.id.user', user: 'bob' }, password })
    expect([login.statusCode, login.json().errcode]).to.deep.equal([403, 'M_USER_DEACTIVATED'])
    const again = await call('POST', undefined, '/register', { username: 'bob', password, auth: { type: 'm.login.dummy' } })
    expect([again.statusCode, again.json().errcode]).to.deep.equal([400, 'M_USER_IN_USE'])
    const members = await call('GET', alice, `/rooms/${enc(joined)}/joined_members`)
    expect(Object.keys(members.json().joined)).to.deep.equal([alice.user_id])
    const found = await call('POST', alice, '/user_directory/search', { search_term: 'bob' })
    expect(found.json().results).to.deep.equal([])
    const profile = await call('GET', alice, `/profile/${enc(bob.user_id)}`)
    expect(profile.json().displayname, 'kept without erase').to.equal('bob')
  })

  it('should clear the display name and avatar with erase', async () => {
    const carol = await h.register('carol')
    await call('PUT', carol, `/profile/${enc(carol.user_id)}/avatar_url`, { avatar_url: 'mxc://hs.test/c' })
    const res = await call('POST', carol, '/account/deactivate', { auth: passwordAuth(carol), erase: true })
    expect(res.statusCode, res.body).to.equal(200)
    const dave = await h.register('dave')
    const profile = await call('GET', dave, `/profile/${enc(carol.user_id)}`)
    expect([profile.json().displayname, profile.json().avatar_url]).to.deep.equal([undefined, undefined])
  })

  it('should refuse malformed requests with a Matrix error and deactivate nothing', async () => {
    const erin = await h.register('erin')
    for (const [body, errcode] of [
      [{ auth: passwordAuth(erin), erase: 'yes' }, 'M_BAD_JSON'],
      [{ auth: 'password' }, 'M_BAD_JSON'],
      [{ auth: { type: 'm.login.dummy' } }, 'M_UNRECOGNIZED'],
    ] as const) {
      const res = await call('POST', erin, '/account/deactivate', body)
      expect([res.statusCode, res.json().errcode], JSON.stringify(body)).to.deep.equal([400, errcode])
    }
    const anonymous = await call('POST', undefined, '/account/deactivate', { auth: passwordAuth(erin) })
    expect([anonymous.statusCode, anonymous.json().errcode]).to.deep.equal([401, 'M_MISSING_TOKEN'])
    expect((await call('GET', erin, '/account/whoami')).statusCode).to.equal(200)
  })
})
