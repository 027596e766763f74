import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect } from 'chai'
import { createTestDatabase, redisUrl, type TestDatabase } from '../../support/db.js'
import { register, startTestCluster, type TestCluster } from '../reliability/test-cluster.js'

const enc = encodeURIComponent

interface Answer {
  readonly status: number
  readonly json: Record<string, unknown>
}

/**
 * The client-server API over real HTTP through `myelin cluster` (router, 1 api worker, 2
 * persisters, Redis): each route family's success and its errors, as a client meets them. The
 * per-route details are tested in test/integration/api/; this proves them on the deployed path.
 */
describe('client API over real HTTP against a myelin cluster', function () {
  this.timeout(90_000)
  let t: TestDatabase
  let dir: string
  let cluster: TestCluster
  let base: string

  before(async () => {
    t = await createTestDatabase()
    dir = await mkdtemp(join(tmpdir(), 'myelin-http-'))
    cluster = await startTestCluster({ databaseUrl: t.url, redisUrl: redisUrl(), dataDir: dir })
    base = cluster.run.ready.client_url
  })
  after(async () => {
    await cluster?.stop()
    await t?.drop()
    if (dir) await rm(dir, { recursive: true, force: true })
  })

  async function call(method: string, path: string, options: { token?: string; body?: unknown; raw?: string } = {}): Promise<Answer> {
    const res = await fetch(`${base}/_matrix/client${path.startsWith('/versions') ? '' : '/v3'}${path}`, {
      method,
      headers: { ...(options.token && { authorization: `Bearer ${options.token}` }), 'content-type': 'application/json' },
      ...(options.raw !== undefined ? { body: options.raw } : options.body !== undefined ? { body: JSON.stringify(options.body) } : {}),
    })
    const text = await res.text()
    return { status: res.status, json: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>) }
  }
  const ok = async (method: string, path: string, options: { token?: string; body?: unknown } = {}) => {
    const answer = await call(method, path, options)
    expect(answer.status, `${method} ${path}: ${JSON.stringify(answer.json)}`).to.equal(200)
    return answer.json
  }
  const fails = async (expected: [number, string], method: string, path: string, options: { token?: string; body?: unknown; raw?: string } = {}) => {
    const answer = await call(method, path, options)
    expect([answer.status, answer.json['errcode']], `${method} ${path}`).to.deep.equal(expected)
    expect(answer.json['error'], `${method} ${path} explains itself`).to.be.a('string')
  }

  it('accounts and start-up endpoints: register, login, whoami, devices, filters, push rules, account data, logout', async () => {
    expect((await ok('GET', '/versions'))['versions']).to.include('v1.1')
    const alice = await register(base, 'alice')
    const token = alice.access_token
    expect((await ok('GET', '/capabilities', { token }))['capabilities']).to.have.property('m.room_versions')
    expect(await ok('GET', '/account/whoami', { token })).to.include({ user_id: alice.user_id, device_id: alice.device_id })
    const login = await ok('POST', '/login', { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: 'alice' }, password: 'correct horse battery' } })
    expect(login).to.include({ user_id: alice.user_id })
    const devices = (await ok('GET', '/devices', { token }))['devices'] as { device_id: string }[]
    expect(devices.map((d) => d.device_id)).to.have.members([alice.device_id, login['device_id'] as string])
    const { filter_id } = (await ok('POST', `/user/${enc(alice.user_id)}/filter`, { token, body: { room: { timeline: { limit: 5 } } } })) as { filter_id: string }
    expect(await ok('GET', `/user/${enc(alice.user_id)}/filter/${filter_id}`, { token })).to.deep.equal({ room: { timeline: { limit: 5 } } })
    expect((await ok('GET', '/pushrules/', { token }))['global']).to.have.property('override')
    await ok('PUT', `/user/${enc(alice.user_id)}/account_data/m.direct`, { token, body: { '@bob:x': ['!r:x'] } })
    expect(await ok('GET', `/user/${enc(alice.user_id)}/account_data/m.direct`, { token })).to.deep.equal({ '@bob:x': ['!r:x'] })

    await fails([401, 'M_MISSING_TOKEN'], 'GET', '/account/whoami')
    await fails([401, 'M_UNKNOWN_TOKEN'], 'GET', '/account/whoami', { token: `${token}x` })
    await fails([403, 'M_FORBIDDEN'], 'POST', '/login', { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: 'alice' }, password: 'wrong' } })
    await fails([400, 'M_USER_IN_USE'], 'POST', '/register', { body: { username: 'alice', password: 'correct horse battery', auth: { type: 'm.login.dummy' } } })
    await fails([404, 'M_NOT_FOUND'], 'GET', `/user/${enc(alice.user_id)}/account_data/m.unknown`, { token })
    await fails([404, 'M_UNRECOGNIZED'], 'GET', '/no/such/endpoint', { token })
    await fails([400, 'M_NOT_JSON'], 'POST', `/user/${enc(alice.user_id)}/filter`, { token, raw: '{not json' })

    await ok('POST', '/logout', { token: login['access_token'] as string, body: {} })
    await fails([401, 'M_UNKNOWN_TOKEN'], 'GET', '/account/whoami', { token: login['access_token'] as string })
    await ok('POST', '/logout/all', { token, body: {} })
    await fails([401, 'M_UNKNOWN_TOKEN'], 'GET', '/account/whoami', { token })
  })

  it('rooms: create, alias, invite, join, send, state, read, redact, membership actions; and who may not', async () => {
    const [alice, bob, eve] = [await register(base, 'ann'), await register(base, 'ben'), await register(base, 'eve')]
    const a = alice.access_token
    const created = await ok('POST', '/createRoom', { token: a, body: { preset: 'private_chat', name: 'Tour', topic: 'over HTTP', room_alias_name: 'tour', invite: [bob.user_id] } })
    const roomId = created['room_id'] as string
    const alias = `#tour:${cluster.serverName}`
    expect(await ok('GET', `/directory/room/${enc(alias)}`)).to.include({ room_id: roomId })
    expect(await ok('POST', `/join/${enc(alias)}`, { token: bob.access_token, body: {} })).to.include({ room_id: roomId })
    expect((await ok('GET', '/joined_rooms', { token: bob.access_token }))['joined_rooms']).to.include(roomId)
    expect(Object.keys((await ok('GET', `/rooms/${enc(roomId)}/joined_members`, { token: a }))['joined'] as object)).to.have.members([alice.user_id, bob.user_id])

    const sent = await ok('PUT', `/rooms/${enc(roomId)}/send/m.room.message/t1`, { token: bob.access_token, body: { msgtype: 'm.text', body: 'hello' } })
    const again = await ok('PUT', `/rooms/${enc(roomId)}/send/m.room.message/t1`, { token: bob.access_token, body: { msgtype: 'm.text', body: 'hello' } })
    expect(again['event_id'], 'a repeated txn ID answers the same event').to.equal(sent['event_id'])
    await ok('PUT', `/rooms/${enc(roomId)}/state/m.room.topic/`, { token: a, body: { topic: 'changed' } })
    expect(await ok('GET', `/rooms/${enc(roomId)}/state/m.room.topic/`, { token: bob.access_token })).to.deep.equal({ topic: 'changed' })
    expect(((await ok('GET', `/rooms/${enc(roomId)}/state`, { token: a })) as unknown as unknown[]).length).to.be.above(5)
    expect(await ok('GET', `/rooms/${enc(roomId)}/event/${enc(sent['event_id'] as string)}`, { token: a })).to.include({ type: 'm.room.message' })
    const messages = await ok('GET', `/rooms/${enc(roomId)}/messages?dir=b&limit=50`, { token: a })
    expect((messages['chunk'] as { event_id: string }[]).map((e) => e.event_id)).to.include(sent['event_id'])
    expect((await ok('GET', `/rooms/${enc(roomId)}/context/${enc(sent['event_id'] as string)}?limit=2`, { token: a }))['event']).to.include({ event_id: sent['event_id'] })
    expect((await ok('GET', `/rooms/${enc(roomId)}/members?membership=join`, { token: a }))['chunk']).to.have.length(2)
    await ok('PUT', `/rooms/${enc(roomId)}/redact/${enc(sent['event_id'] as string)}/r1`, { token: bob.access_token, body: { reason: 'oops' } })
    expect((await ok('GET', `/rooms/${enc(roomId)}/event/${enc(sent['event_id'] as string)}`, { token: a }))['content']).to.deep.equal({})

    // Who may not: a non-member reads and writes nothing; a member below the power level sets no state.
    await fails([403, 'M_FORBIDDEN'], 'GET', `/rooms/${enc(roomId)}/messages?dir=b`, { token: eve.access_token })
    await fails([403, 'M_FORBIDDEN'], 'GET', `/rooms/${enc(roomId)}/event/${enc(sent['event_id'] as string)}`, { token: eve.access_token })
    await fails([403, 'M_FORBIDDEN'], 'PUT', `/rooms/${enc(roomId)}/send/m.room.message/e1`, { token: eve.access_token, body: { body: 'let me in' } })
    await fails([403, 'M_FORBIDDEN'], 'POST', `/join/${enc(roomId)}`, { token: eve.access_token, body: {} })
    await fails([403, 'M_FORBIDDEN'], 'PUT', `/rooms/${enc(roomId)}/state/m.room.name/`, { token: bob.access_token, body: { name: 'mine now' } })
    await fails([404, 'M_NOT_FOUND'], 'PUT', `/rooms/${enc(`!nothing:${cluster.serverName}`)}/send/m.room.message/n1`, { token: a, body: { body: 'x' } })
    await fails([400, 'M_INVALID_PARAM'], 'GET', `/rooms/${enc(roomId)}/messages?dir=sideways`, { token: a })
    await fails([400, 'M_BAD_JSON'], 'PUT', `/rooms/${enc(roomId)}/send/m.room.message/b1`, { token: a, raw: '[1]' })
    await fails([413, 'M_TOO_LARGE'], 'PUT', `/rooms/${enc(roomId)}/send/m.room.message/b2`, { token: a, body: { body: 'x'.repeat(70_000) } })

    // Membership actions by the room's admin.
    await ok('POST', `/rooms/${enc(roomId)}/kick`, { token: a, body: { user_id: bob.user_id, reason: 'tour' } })
    await ok('POST', `/rooms/${enc(roomId)}/invite`, { token: a, body: { user_id: bob.user_id } })
    await ok('POST', `/rooms/${enc(roomId)}/join`, { token: bob.access_token, body: {} })
    await ok('POST', `/rooms/${enc(roomId)}/ban`, { token: a, body: { user_id: eve.user_id } })
    await fails([403, 'M_FORBIDDEN'], 'POST', `/rooms/${enc(roomId)}/join`, { token: eve.access_token, body: {} })
    await ok('POST', `/rooms/${enc(roomId)}/unban`, { token: a, body: { user_id: eve.user_id } })
    await ok('POST', `/rooms/${enc(roomId)}/leave`, { token: bob.access_token, body: {} })
    await ok('POST', `/rooms/${enc(roomId)}/forget`, { token: bob.access_token, body: {} })
    expect((await ok('GET', '/joined_rooms', { token: bob.access_token }))['joined_rooms']).to.not.include(roomId)
  })

  it('replication endpoints refuse a missing or wrong secret and persist nothing', async () => {
    const [writer, target] = [...cluster.persisters][0]!
    const roomId = `!norepl:${cluster.serverName}`
    const body = JSON.stringify({ room_id: roomId, events: [{ type: 'm.room.create', state_key: '', sender: `@x:${cluster.serverName}`, content: { room_version: '11' } }] })
    for (const authorization of [undefined, 'Bearer wrong-secret', `Basic ${target.secret}`]) {
      for (const path of ['persist/r1', 'persist_batch', 'import/r1']) {
        const res = await fetch(`${target.base}/_myelin/replication/${path}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...(authorization && { authorization }) },
          body: path === 'persist_batch' ? JSON.stringify({ requests: [{ request_id: 'r1', ...JSON.parse(body) }] }) : body,
        })
        expect(res.status, `${writer} ${path} with ${authorization ?? 'no authorization'}`).to.equal(401)
      }
    }
    const { rows } = await t.pool.query('SELECT count(*)::int AS n FROM events WHERE room_id = $1', [roomId])
    expect(rows[0].n).to.equal(0)
  })
})
