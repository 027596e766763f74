import { expect } from 'chai'
import type { LightMyRequestResponse } from 'fastify'
import { directoryRoutes } from '../../../api/routes/directory.js'
import { roomWriteRoutes } from '../../../api/routes/rooms.js'
import { getCurrentState } from '../../../storage/events/event-store.js'
import { startApi, v3, type ApiHarness, type Session } from './api-harness.js'

const enc = encodeURIComponent

describe('api room directory (aliases, published rooms)', function () {
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

  const call = (method: 'POST' | 'PUT' | 'GET' | 'DELETE', session: Session | undefined, path: string, body?: unknown) =>
    h.call(method, `${v3}${path}`, { ...(session && { token: session.access_token }), ...(body !== undefined && { body }) })
  const status = (res: LightMyRequestResponse) => [res.statusCode, res.statusCode === 200 ? undefined : res.json().errcode]

  async function createRoom(session: Session, body: Record<string, unknown> = {}): Promise<string> {
    const res = await call('POST', session, '/createRoom', body)
    expect(res.statusCode, res.body).to.equal(200)
    return res.json().room_id as string
  }

  async function roomCount(): Promise<number> {
    const row = await h.t.db.selectFrom('rooms').select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow()
    return Number(row.n)
  }

  describe('aliases', () => {
    it('should create, resolve, list and delete an alias, and refuse conflicts', async () => {
      const roomId = await createRoom(alice, { preset: 'public_chat' })
      const other = await createRoom(alice, { preset: 'public_chat' })
      const alias = '#main:hs.test'
      expect(status(await call('PUT', alice, `/directory/room/${enc(alias)}`, { room_id: roomId }))).to.deep.equal([200, undefined])
      const resolved = await call('GET', undefined, `/directory/room/${enc(alias)}`)
      expect(resolved.json()).to.deep.equal({ room_id: roomId, servers: ['hs.test'] })
      const conflict = await call('PUT', alice, `/directory/room/${enc(alias)}`, { room_id: other })
      expect(status(conflict)).to.deep.equal([409, 'M_UNKNOWN'])
      expect((await call('GET', undefined, `/directory/room/${enc(alias)}`)).json().room_id).to.equal(roomId)
      expect((await call('PUT', alice, `/directory/room/${enc('#second:hs.test')}`, { room_id: roomId })).statusCode).to.equal(200)
      expect((await call('GET', alice, `/rooms/${enc(roomId)}/aliases`)).json()).to.deep.equal({ aliases: ['#main:hs.test', '#second:hs.test'] })

      expect(status(await call('DELETE', alice, `/directory/room/${enc(alias)}`))).to.deep.equal([200, undefined])
      expect(status(await call('GET', alice, `/directory/room/${enc(alias)}`))).to.deep.equal([404, 'M_NOT_FOUND'])
      expect(status(await call('DELETE', alice, `/directory/room/${enc(alias)}`))).to.deep.equal([404, 'M_NOT_FOUND'])
      expect((await call('PUT', alice, `/directory/room/${enc(alias)}`, { room_id: other })).statusCode).to.equal(200)
      expect((await call('GET', undefined, `/directory/room/${enc(alias)}`)).json().room_id).to.equal(other)
    })

    it('should check who may add, list and delete aliases', async () => {
      const roomId = await createRoom(alice, { preset: 'public_chat' })
      await call('POST', bob, `/join/${enc(roomId)}`)
      const table: [string, Session, 'PUT' | 'GET' | 'DELETE', string, unknown, number, string | undefined][] = [
        ['a member adds an alias', bob, 'PUT', `/directory/room/${enc('#bobs:hs.test')}`, { room_id: roomId }, 200, undefined],
        ['a non-member adds an alias', carol, 'PUT', `/directory/room/${enc('#carols:hs.test')}`, { room_id: roomId }, 403, 'M_FORBIDDEN'],
        ['an alias of another server', alice, 'PUT', `/directory/room/${enc('#x:other.test')}`, { room_id: roomId }, 400, 'M_INVALID_PARAM'],
        ['an alias for an unknown room', alice, 'PUT', `/directory/room/${enc('#x:hs.test')}`, { room_id: '!nothing:hs.test' }, 404, 'M_NOT_FOUND'],
        ['a malformed room ID', alice, 'PUT', `/directory/room/${enc('#x:hs.test')}`, { room_id: 'nothing' }, 400, 'M_INVALID_PARAM'],
        ['a malformed alias', alice, 'PUT', `/directory/room/${enc('x:hs.test')}`, { room_id: roomId }, 400, 'M_INVALID_PARAM'],
        ['no room_id', alice, 'PUT', `/directory/room/${enc('#x:hs.test')}`, {}, 400, 'M_BAD_JSON'],
        ['a non-member lists aliases', carol, 'GET', `/rooms/${enc(roomId)}/aliases`, undefined, 403, 'M_FORBIDDEN'],
        ['aliases of an unknown room', alice, 'GET', `/rooms/${enc('!nothing:hs.test')}/aliases`, undefined, 404, 'M_NOT_FOUND'],
        ['carol deletes bob\u2019s alias', carol, 'DELETE', `/directory/room/${enc('#bobs:hs.test')}`, undefined, 403, 'M_FORBIDDEN'],
        ['alice (power 100) deletes bob\u2019s alias', alice, 'DELETE', `/directory/room/${enc('#bobs:hs.test')}`, undefined, 200, undefined],
        ['bob adds another alias', bob, 'PUT', `/directory/room/${enc('#bobs2:hs.test')}`, { room_id: roomId }, 200, undefined],
        ['bob (the creator, power 0) deletes it', bob, 'DELETE', `/directory/room/${enc('#bobs2:hs.test')}`, undefined, 200, undefined],
        ['alice adds an alias', alice, 'PUT', `/directory/room/${enc('#alices:hs.test')}`, { room_id: roomId }, 200, undefined],
        ['bob (power 0) deletes alice\u2019s alias', bob, 'DELETE', `/directory/room/${enc('#alices:hs.test')}`, undefined, 403, 'M_FORBIDDEN'],
      ]
      for (const [what, session, method, path, body, code, errcode] of table) {
        const res = await call(method, session, path, body)
        expect(status(res), `${what}: ${res.body}`).to.deep.equal([code, errcode])
      }
      expect(status(await call('PUT', undefined, `/directory/room/${enc('#anon:hs.test')}`, { room_id: roomId }))).to.deep.equal([401, 'M_MISSING_TOKEN'])
      expect((await call('GET', bob, `/rooms/${enc(roomId)}/aliases`)).json()).to.deep.equal({ aliases: ['#alices:hs.test'] })
    })

    it('should create the alias of createRoom, and refuse a taken one before creating the room', async () => {
      const res = await call('POST', alice, '/createRoom', { room_alias_name: 'lobby', preset: 'public_chat' })
      expect(res.json()).to.deep.include({ room_alias: '#lobby:hs.test' })
      const roomId = res.json().room_id as string
      expect((await call('GET', undefined, `/directory/room/${enc('#lobby:hs.test')}`)).json().room_id).to.equal(roomId)
      const canonical = (await getCurrentState(h.t.db, roomId)).find((s) => s.type === 'm.room.canonical_alias')
      expect(canonical?.content).to.deep.equal({ alias: '#lobby:hs.test' })
      const rooms = await roomCount()
      const taken = await call('POST', bob, '/createRoom', { room_alias_name: 'lobby' })
      expect(status(taken)).to.deep.equal([400, 'M_ROOM_IN_USE'])
      expect(await roomCount()).to.equal(rooms)
    })
  })

  describe('published rooms', () => {
    it('should publish and unpublish rooms and list them in /publicRooms', async () => {
      const listed = await createRoom(alice, { visibility: 'public', name: 'Big', topic: 'Lots of people', room_alias_name: 'big' })
      await call('POST', bob, `/join/${enc(listed)}`)
      const small = await createRoom(bob, { preset: 'public_chat', name: 'Small' })
      const hidden = await createRoom(carol, { preset: 'public_chat', name: 'Hidden' })

      const visibility = async (roomId: string) => (await call('GET', undefined, `/directory/list/room/${enc(roomId)}`)).json().visibility
      expect(await visibility(listed)).to.equal('public')
      expect(await visibility(small)).to.equal('private')
      expect(status(await call('PUT', alice, `/directory/list/room/${enc(small)}`, { visibility: 'public' }))).to.deep.equal([403, 'M_FORBIDDEN'])
      expect(status(await call('PUT', bob, `/directory/list/room/${enc(small)}`, { visibility: 'public' }))).to.deep.equal([200, undefined])
      expect(await visibility(small)).to.equal('public')
      expect(status(await call('PUT', bob, `/directory/list/room/${enc(small)}`, { visibility: 'hidden' }))).to.deep.equal([400, 'M_BAD_JSON'])
      expect(status(await call('PUT', bob, `/directory/list/room/${enc('!nothing:hs.test')}`, { visibility: 'public' }))).to.deep.equal([404, 'M_NOT_FOUND'])
      expect(status(await call('GET', bob, `/directory/list/room/${enc('!nothing:hs.test')}`))).to.deep.equal([404, 'M_NOT_FOUND'])
      expect(status(await call('GET', bob, `/directory/list/room/${enc('nothing')}`))).to.deep.equal([400, 'M_INVALID_PARAM'])

      const all = await call('GET', carol, '/publicRooms')
      const chunk = all.json().chunk as Record<string, unknown>[]
      const ours = chunk.filter((room) => room['room_id'] === listed || room['room_id'] === small || room['room_id'] === hidden)
      expect(ours).to.deep.equal([
        { room_id: listed, num_joined_members: 2, world_readable: false, guest_can_join: false, name: 'Big', topic: 'Lots of people', canonical_alias: '#big:hs.test', join_rule: 'public' },
        { room_id: small, num_joined_members: 1, world_readable: false, guest_can_join: false, name: 'Small', join_rule: 'public' },
      ])
      expect(all.json().total_room_count_estimate).to.equal(chunk.length)

      const pages: string[] = []
      let since: string | undefined
      do {
        const page = await call('GET', carol, `/publicRooms?limit=1${since === undefined ? '' : `&since=${since}`}`)
        const rooms = page.json().chunk as { room_id: string }[]
        expect(rooms.length).to.be.at.most(1)
        pages.push(...rooms.map((r) => r.room_id))
        since = page.json().next_batch
      } while (since !== undefined)
      expect(pages).to.deep.equal(chunk.map((room) => room['room_id']))
      const posted = await call('POST', carol, '/publicRooms', { limit: 1, since: 'o1' })
      expect(posted.json().chunk).to.deep.equal([chunk[1]])
      expect(posted.json().prev_batch).to.equal('o0')

      expect(status(await call('PUT', bob, `/directory/list/room/${enc(small)}`, { visibility: 'private' }))).to.deep.equal([200, undefined])
      const after = (await call('GET', carol, '/publicRooms')).json().chunk as { room_id: string }[]
      expect(after.map((r) => r.room_id)).to.not.include(small)

      const search = async (term: string) =>
        ((await call('POST', carol, '/publicRooms', { filter: { generic_search_term: term } })).json().chunk as { room_id: string }[]).map((r) => r.room_id)
      expect(await search('LOTS OF')).to.deep.equal([listed])
      expect(await search('#big:')).to.deep.equal([listed])
      expect(await search('%')).to.deep.equal([])
      expect(await search('')).to.include(listed)
      expect(status(await call('POST', carol, '/publicRooms', { limit: '1' }))).to.deep.equal([400, 'M_BAD_JSON'])
      expect(status(await call('GET', carol, '/publicRooms?since=bogus'))).to.deep.equal([400, 'M_INVALID_PARAM'])
      expect(status(await call('GET', carol, '/publicRooms?limit=-1'))).to.deep.equal([400, 'M_INVALID_PARAM'])
      expect(status(await call('GET', carol, '/publicRooms?server=other.test'))).to.deep.equal([400, 'M_UNRECOGNIZED'])
      expect(status(await call('GET', undefined, '/publicRooms'))).to.deep.equal([401, 'M_MISSING_TOKEN'])
    })
  })
})
