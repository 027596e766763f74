import { expect } from 'chai'
import { roomReadRoutes } from '../../../api/routes/room-reads.js'
import { roomWriteRoutes } from '../../../api/routes/rooms.js'
import { syncRoutes } from '../../../api/routes/sync.js'
import { startApi, type ApiHarness, type Session } from './api-harness.js'
import { enc } from './read-fixtures.js'

const v1 = '/_matrix/client/v1'
const v3 = '/_matrix/client/v3'

interface Page {
  rooms: { room_id: string; name?: string; room_type?: string; join_rule?: string; num_joined_members: number; world_readable: boolean; guest_can_join: boolean; children_state: { state_key: string; content: Record<string, unknown> }[] }[]
  next_batch?: string
}

describe('api space hierarchy', function () {
  this.timeout(60_000)
  let h: ApiHarness
  let alice: Session
  let bob: Session
  // space → [C (order a, suggested), A (order b), B (private), R (restricted to A), X (no via)]; C → [D (suggested)]
  const ids: Record<string, string> = {}
  before(async () => {
    h = await startApi({ roomRoutes: (services) => [roomReadRoutes(services), roomWriteRoutes(services), syncRoutes(services)] })
    alice = await h.register('alice')
    bob = await h.register('bob')
    const create = async (name: string, body: Record<string, unknown>) => {
      const res = await h.call('POST', `${v3}/createRoom`, { token: alice.access_token, body: { name, ...body } })
      expect(res.statusCode, res.body).to.equal(200)
      ids[name] = res.json<{ room_id: string }>().room_id
    }
    await create('Space', { preset: 'public_chat', creation_content: { type: 'm.space' } })
    await create('A', { preset: 'public_chat' })
    await create('B', { preset: 'private_chat' })
    await create('C', { preset: 'public_chat', creation_content: { type: 'm.space' } })
    await create('D', { preset: 'public_chat' })
    await create('X', { preset: 'public_chat' })
    await create('R', {
      preset: 'private_chat',
      initial_state: [{ type: 'm.room.join_rules', state_key: '', content: { join_rule: 'restricted', allow: [{ type: 'm.room_membership', room_id: ids['A'] }] } }],
    })
    const child = async (parent: string, name: string, content: Record<string, unknown>) => {
      const res = await h.call('PUT', `${v3}/rooms/${enc(ids[parent]!)}/state/m.space.child/${enc(ids[name]!)}`, { token: alice.access_token, body: content })
      expect(res.statusCode, res.body).to.equal(200)
    }
    const via = ['hs.test']
    await child('Space', 'A', { via, order: 'b' })
    await child('Space', 'B', { via })
    await child('Space', 'C', { via, order: 'a', suggested: true })
    await child('Space', 'R', { via })
    await child('Space', 'X', {})
    await child('C', 'D', { via, suggested: true })
  })
  after(() => h.close())

  const hierarchy = async (session: Session, roomId: string, query: Record<string, string> = {}) => {
    const qs = new URLSearchParams(query).toString()
    return h.call('GET', `${v1}/rooms/${enc(roomId)}/hierarchy${qs ? `?${qs}` : ''}`, { token: session.access_token })
  }
  const names = (page: Page) => page.rooms.map((r) => Object.entries(ids).find(([, id]) => id === r.room_id)![0])

  it('should walk the space breadth first in child order, showing only the rooms the requester may see', async () => {
    const res = await hierarchy(bob, ids['Space']!)
    expect(res.statusCode).to.equal(200)
    const page = res.json<Page>()
    // B is private, R restricted to A (bob is in neither), X has no via.
    expect(names(page)).to.deep.equal(['Space', 'C', 'A', 'D'])
    expect(page.next_batch).to.equal(undefined)
    const space = page.rooms[0]!
    expect(space).to.deep.include({ name: 'Space', room_type: 'm.space', join_rule: 'public', num_joined_members: 1, world_readable: false, guest_can_join: false })
    expect(space.children_state.map((c) => c.state_key)).to.deep.equal([ids['C'], ids['A'], ids['B'], ids['R']])
    expect(space.children_state[0]!.content).to.deep.equal({ via: ['hs.test'], order: 'a', suggested: true })
    // alice is in every room: she sees them all.
    expect(names((await hierarchy(alice, ids['Space']!)).json<Page>())).to.deep.equal(['Space', 'C', 'A', 'B', 'R', 'D'])
  })

  it('should let a restricted room through once the requester joins an allowed room', async () => {
    expect((await h.call('POST', `${v3}/join/${enc(ids['A']!)}`, { token: bob.access_token, body: {} })).statusCode).to.equal(200)
    expect(names((await hierarchy(bob, ids['Space']!)).json<Page>())).to.deep.equal(['Space', 'C', 'A', 'R', 'D'])
    expect((await h.call('POST', `${v3}/rooms/${enc(ids['A']!)}/leave`, { token: bob.access_token, body: {} })).statusCode).to.equal(200)
  })

  it('should stop at max_depth, follow suggested children only when asked, and page with tokens of the same walk', async () => {
    const depth1 = await hierarchy(bob, ids['Space']!, { max_depth: '1' })
    expect(depth1.statusCode, depth1.body).to.equal(200)
    expect(names(depth1.json<Page>())).to.deep.equal(['Space', 'C', 'A'])
    expect(names((await hierarchy(bob, ids['Space']!, { max_depth: '0' })).json<Page>())).to.deep.equal(['Space'])
    expect(names((await hierarchy(bob, ids['Space']!, { suggested_only: 'true' })).json<Page>())).to.deep.equal(['Space', 'C', 'D'])
    const first = (await hierarchy(bob, ids['Space']!, { limit: '2' })).json<Page>()
    expect(names(first)).to.deep.equal(['Space', 'C'])
    const second = (await hierarchy(bob, ids['Space']!, { limit: '2', from: first.next_batch! })).json<Page>()
    expect([names(second), second.next_batch]).to.deep.equal([['A', 'D'], undefined])
    const other = await hierarchy(bob, ids['Space']!, { limit: '2', from: first.next_batch!, max_depth: '1' })
    expect([other.statusCode, other.json<{ errcode: string }>().errcode]).to.deep.equal([400, 'M_INVALID_PARAM'])
  })

  it('should refuse a space the requester may not see, and malformed requests, with a Matrix error', async () => {
    const cases: [string, Promise<{ statusCode: number; json: () => { errcode?: string } }>, number, string][] = [
      ['private root', hierarchy(bob, ids['B']!), 403, 'M_FORBIDDEN'],
      ['unknown room', hierarchy(bob, '!nowhere:hs.test'), 403, 'M_FORBIDDEN'],
      ['not a room ID', hierarchy(bob, 'nowhere'), 400, 'M_INVALID_PARAM'],
      ['bad limit', hierarchy(bob, ids['Space']!, { limit: '0' }), 400, 'M_INVALID_PARAM'],
      ['bad depth', hierarchy(bob, ids['Space']!, { max_depth: 'deep' }), 400, 'M_INVALID_PARAM'],
      ['forged token', hierarchy(bob, ids['Space']!, { from: '2_000000000000' }), 400, 'M_INVALID_PARAM'],
      ['no token', h.call('GET', `${v1}/rooms/${enc(ids['Space']!)}/hierarchy`), 401, 'M_MISSING_TOKEN'],
    ]
    for (const [what, call, status, errcode] of cases) {
      const res = await call
      expect([what, res.statusCode, res.json().errcode]).to.deep.equal([what, status, errcode])
    }
    expect((await hierarchy(alice, ids['B']!)).statusCode).to.equal(200)
  })

  describe('room summary (GET /v1/room_summary/{roomIdOrAlias})', () => {
    const summary = (session: Session | undefined, target: string, path = `${v1}/room_summary/${enc(target)}`) =>
      h.call('GET', path, { ...(session && { token: session.access_token }) })

    it("should preview a room by ID or alias: its name, members, join rule, type, version, encryption and the requester's membership", async () => {
      const res = await h.call('POST', `${v3}/createRoom`, {
        token: alice.access_token,
        body: { preset: 'public_chat', name: 'Preview me', topic: 'About it', room_alias_name: 'preview', initial_state: [{ type: 'm.room.encryption', content: { algorithm: 'm.megolm.v1.aes-sha2' } }] },
      })
      const roomId = res.json<{ room_id: string }>().room_id
      const expected = {
        room_id: roomId,
        name: 'Preview me',
        topic: 'About it',
        canonical_alias: '#preview:hs.test',
        num_joined_members: 1,
        join_rule: 'public',
        world_readable: false,
        guest_can_join: false,
        room_version: '11',
        encryption: 'm.megolm.v1.aes-sha2',
      }
      const byAlias = await summary(bob, '#preview:hs.test')
      expect(byAlias.statusCode, byAlias.body).to.equal(200)
      expect(byAlias.json(), 'bob is not a member: no membership').to.deep.equal(expected)
      expect((await summary(alice, roomId)).json()).to.deep.equal({ ...expected, membership: 'join' })
      expect((await summary(undefined, roomId)).json(), 'no token: what anyone may see').to.deep.equal(expected)
      const unstable = await summary(bob, roomId, `/_matrix/client/unstable/im.nheko.summary/rooms/${enc(roomId)}/summary`)
      expect(unstable.json()).to.deep.equal(expected)
      expect((await summary(bob, ids['Space']!)).json()).to.include({ room_type: 'm.space', name: 'Space' })
      expect((await summary(alice, ids['R']!)).json()).to.deep.include({ join_rule: 'restricted', allowed_room_ids: [ids['A']] })
    })

    it('should answer 404 for a room the requester may not see, like an unknown one, and refuse malformed requests', async () => {
      const cases: [string, Promise<{ statusCode: number; json: () => { errcode?: string } }>, number, string][] = [
        ['private room, not a member', summary(bob, ids['B']!), 404, 'M_NOT_FOUND'],
        ['private room, no token', summary(undefined, ids['B']!), 404, 'M_NOT_FOUND'],
        ['unknown room', summary(bob, '!nowhere:hs.test'), 404, 'M_NOT_FOUND'],
        ['unknown alias', summary(bob, '#nowhere:hs.test'), 404, 'M_NOT_FOUND'],
        ['malformed', summary(bob, 'nowhere'), 400, 'M_INVALID_PARAM'],
        ['bad token', h.call('GET', `${v1}/room_summary/${enc(ids['A']!)}`, { token: 'syt_bad_token_x' }), 401, 'M_UNKNOWN_TOKEN'],
      ]
      for (const [what, call, status, errcode] of cases) {
        const res = await call
        expect([what, res.statusCode, res.json().errcode]).to.deep.equal([what, status, errcode])
      }
      expect((await summary(alice, ids['B']!)).json(), 'a member sees it').to.include({ room_id: ids['B'], membership: 'join' })
    })
  })
})
