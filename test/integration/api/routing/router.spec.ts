import { createServer, request as httpRequest, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { expect } from 'chai'
import { createRouter, type Router, type RouterUpstreams, type Upstream } from '../../../../api/routing/router.js'
import { createShardMap } from '../../../../persisters/shard-map.js'
import { silentLogger } from '../../../../storage/logger.js'
import { patternBytes, sha256, startEchoUpstream, sytToken, type Echo, type EchoUpstream } from './echo-upstream.js'

const client = '/_matrix/client/v3'
const shardMap = createShardMap({ writers: ['persister1', 'persister2'], pins: { '!pinned:hs.test': 'persister2' } })

const asUpstream = (u: EchoUpstream | { name: string; port: number }): Upstream => ({ name: u.name, host: '127.0.0.1', port: u.port })

/** A port nothing listens on (bound, then released). */
async function deadPort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
  const { port } = server.address() as AddressInfo
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

/** An upstream that accepts each request and then drops the connection without answering. */
async function startDroppingUpstream(): Promise<{ server: Server; port: number; hits: { count: number } }> {
  const hits = { count: 0 }
  const server = createServer((req) => {
    hits.count++
    req.socket.destroy()
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
  return { server, port: (server.address() as AddressInfo).port, hits }
}

describe('createRouter', function () {
  this.timeout(20_000)
  const echoes = new Map<string, EchoUpstream>()
  let router: Router
  let base: string

  const upstreamsOf = (api: string[], persisters: string[]): RouterUpstreams => ({
    api: api.map((n) => asUpstream(echoes.get(n)!)),
    persisters: new Map(persisters.map((n) => [n, asUpstream(echoes.get(n)!)])),
  })

  before(async () => {
    for (const name of ['api1', 'api2', 'api3', 'persister1', 'persister2']) echoes.set(name, await startEchoUpstream(name))
  })
  after(async () => {
    for (const e of echoes.values()) await e.close()
  })
  beforeEach(async () => {
    router = createRouter({ upstreams: upstreamsOf(['api1', 'api2', 'api3'], ['persister1', 'persister2']), shardMap, log: silentLogger() })
    const { port } = await router.listen(0)
    base = `http://127.0.0.1:${port}`
  })
  afterEach(async () => {
    await router.close(100)
  })

  async function call(method: string, path: string, init: { headers?: Record<string, string>; body?: Buffer } = {}): Promise<{ status: number; echo: Echo; headers: Headers }> {
    const response = await fetch(`${base}${path}`, { method, headers: init.headers, body: init.body })
    const text = await response.text()
    return { status: response.status, echo: JSON.parse(text) as Echo, headers: response.headers }
  }

  describe('routing', () => {
    it('should keep each user on one api worker and spread users', async () => {
      const chosen = new Map<string, string>()
      for (let u = 0; u < 16; u++) {
        const localpart = `user${u}_x`
        for (const device of ['a', 'b']) {
          const token = sytToken(localpart, `${localpart}/${device}`)
          for (const path of [`${client}/sync?since=s${u}`, '/_matrix/client/api/v1/events', `${client}/rooms/!r:hs.test/initialSync`]) {
            const byHeader = (await call('GET', path, { headers: { authorization: `Bearer ${token}` } })).echo.upstream
            const byParam = (await call('GET', `${path}${path.includes('?') ? '&' : '?'}access_token=${token}`)).echo.upstream
            for (const upstream of [byHeader, byParam]) {
              expect(upstream).to.match(/^api/)
              expect(chosen.get(localpart) ?? upstream, localpart).to.equal(upstream)
              chosen.set(localpart, upstream)
            }
          }
        }
      }
      expect(new Set(chosen.values()).size).to.be.greaterThan(1)
    })

    it('should send room writes to the owner persister of the room', async () => {
      const seen = new Set<string>()
      for (let i = 0; i < 20; i++) {
        const room = i === 0 ? '!pinned:hs.test' : `!room${i}:hs.test`
        const { echo } = await call('PUT', `${client}/rooms/${encodeURIComponent(room)}/send/m.room.message/t${i}`, { body: Buffer.from('{"body":"hi"}') })
        expect(echo.upstream, room).to.equal(shardMap.ownerOf(room))
        expect(echo.bodyBytes).to.equal(13)
        seen.add(echo.upstream)
      }
      expect(seen).to.deep.equal(new Set(['persister1', 'persister2']))
      expect((await call('POST', `${client}/join/${encodeURIComponent('!pinned:hs.test')}`, { body: Buffer.from('{}') })).echo.upstream).to.equal('persister2')
      expect((await call('GET', `${client}/rooms/!pinned:hs.test/state/m.room.name/`)).echo.upstream).to.match(/^api/)
    })

    it('should spread other requests and tokenless syncs round robin over the api workers', async () => {
      const counts = new Map<string, number>()
      for (let i = 0; i < 6; i++) {
        for (const path of ['/_matrix/client/versions', `${client}/sync`]) {
          const { echo } = await call('GET', path)
          counts.set(echo.upstream, (counts.get(echo.upstream) ?? 0) + 1)
        }
      }
      expect(Object.fromEntries(counts)).to.deep.equal({ api1: 4, api2: 4, api3: 4 })
    })

    it('should preserve status, headers and the path, and add X-Forwarded-For', async () => {
      // node:http, since fetch may not set Connection.
      const path = `${client}/rooms/%21a%3Ahs.test/messages?status=404&dir=b`
      const { status, headers, text } = await new Promise<{ status: number; headers: Record<string, unknown>; text: string }>((resolve, reject) => {
        const req = httpRequest(`${base}${path}`, {
          headers: { 'x-forwarded-for': '203.0.113.9', 'x-custom': 'kept', connection: 'x-custom-hop, keep-alive', 'x-custom-hop': 'dropped' },
        })
        req.on('error', reject)
        req.on('response', (res) => {
          let data = ''
          res.on('data', (chunk: Buffer) => (data += chunk.toString()))
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: data }))
        })
        req.end()
      })
      const echo = JSON.parse(text) as Echo
      expect(status).to.equal(404)
      expect(echo.url).to.equal(path)
      expect(echo.headers['x-forwarded-for']).to.equal('203.0.113.9, 127.0.0.1')
      expect(echo.headers['x-forwarded-proto']).to.equal('http')
      expect(echo.headers['x-custom']).to.equal('kept')
      expect(echo.headers['x-custom-hop']).to.equal(undefined)
      expect(headers['x-upstream']).to.equal(echo.upstream)
      expect(headers['set-cookie']).to.deep.equal(['a=1', 'b=2'])
    })

    it('should stream large bodies both ways, replayable or not', async () => {
      for (const size of [200 * 1024, 5 * 1024 * 1024 + 3]) {
        const body = patternBytes(size)
        const { echo } = await call('POST', `/_matrix/media/v3/upload?size=${size}`, { body })
        expect([echo.bodyBytes, echo.bodySha256]).to.deep.equal([size, sha256(body)])
      }
      const bytes = 7 * 1024 * 1024 + 1
      const response = await fetch(`${base}/_matrix/media/v3/download/hs.test/m?bytes=${bytes}`)
      expect(sha256(Buffer.from(await response.arrayBuffer()))).to.equal(sha256(patternBytes(bytes)))
    })
  })

  describe('failures', () => {
    it('should retry another api worker when one is down, for every kind and method', async () => {
      router.setUpstreams({
        api: [{ name: 'dead', host: '127.0.0.1', port: await deadPort() }, asUpstream(echoes.get('api2')!)],
        persisters: new Map(),
      })
      for (let i = 0; i < 4; i++) {
        expect((await call('GET', '/_matrix/client/versions')).echo.upstream).to.equal('api2')
        expect((await call('POST', `${client}/createRoom`, { body: Buffer.from('{}') })).echo.upstream).to.equal('api2')
        const token = sytToken(`u${i}`, 'd')
        expect((await call('GET', `${client}/sync`, { headers: { authorization: `Bearer ${token}` } })).echo.upstream).to.equal('api2')
      }
    })

    it('should fall back to an api worker when the owner persister is down', async () => {
      router.setUpstreams({
        api: [asUpstream(echoes.get('api1')!)],
        persisters: new Map([
          ['persister1', { name: 'persister1', host: '127.0.0.1', port: await deadPort() }],
          ['persister2', { name: 'persister2', host: '127.0.0.1', port: await deadPort() }],
        ]),
      })
      const { status, echo } = await call('PUT', `${client}/rooms/!pinned:hs.test/send/m.room.message/t1`, { body: Buffer.from('{}') })
      expect([status, echo.upstream]).to.deep.equal([200, 'api1'])
    })

    it('should answer 503 M_UNKNOWN with retry_after_ms when no upstream is reachable', async () => {
      router.setUpstreams({ api: [{ name: 'dead', host: '127.0.0.1', port: await deadPort() }], persisters: new Map() })
      for (const [method, body] of [['GET', undefined], ['POST', Buffer.from('{}')], ['POST', patternBytes(3 * 1024 * 1024)]] as const) {
        const response = await fetch(`${base}${client}/createRoom`, { method, body })
        expect(response.status, method).to.equal(503)
        expect(await response.json()).to.deep.equal({ errcode: 'M_UNKNOWN', error: 'no upstream is available', retry_after_ms: 1000 })
      }
      router.setUpstreams({ api: [], persisters: new Map() })
      expect((await fetch(`${base}/_matrix/client/versions`)).status).to.equal(503)
    })

    it('should retry an idempotent request that an upstream dropped, but answer 502 for a POST', async () => {
      const dropping = await startDroppingUpstream()
      try {
        router.setUpstreams({ api: [{ name: 'dropping', host: '127.0.0.1', port: dropping.port }, asUpstream(echoes.get('api3')!)], persisters: new Map() })
        for (let i = 0; i < 2; i++) {
          // Round robin starts on `dropping` every other request.
          const get = await call('GET', '/_matrix/client/versions')
          expect(get.echo.upstream).to.equal('api3')
        }
        const hitsBefore = dropping.hits.count
        let saw502 = false
        for (let i = 0; i < 2; i++) {
          const response = await fetch(`${base}${client}/createRoom`, { method: 'POST', body: '{}' })
          const json = (await response.json()) as { errcode?: string; retry_after_ms?: number; upstream?: string }
          if (response.status === 502) {
            saw502 = true
            expect(json).to.deep.include({ errcode: 'M_UNKNOWN', retry_after_ms: 1000 })
          } else {
            expect(json.upstream).to.equal('api3')
          }
        }
        expect(saw502).to.equal(true)
        expect(dropping.hits.count).to.equal(hitsBefore + 1)
      } finally {
        await new Promise<void>((resolve) => dropping.server.close(() => resolve()))
      }
    })

    it('should abort the upstream request when the client disconnects, and keep serving', async () => {
      const api1 = echoes.get('api1')!
      router.setUpstreams({ api: [asUpstream(api1)], persisters: new Map() })
      const before = api1.abandoned.count
      for (let i = 0; i < 5; i++) {
        await new Promise<void>((resolve) => {
          const req = httpRequest(`${base}${client}/rooms/!r:hs.test/hang`, { method: 'GET' })
          req.on('error', () => resolve())
          req.end()
          setTimeout(() => {
            req.destroy()
            resolve()
          }, 50)
        })
      }
      for (let i = 0; i < 100 && api1.abandoned.count < before + 5; i++) await new Promise((r) => setTimeout(r, 20))
      expect(api1.abandoned.count).to.equal(before + 5)
      expect((await call('GET', '/_matrix/client/versions')).status).to.equal(200)
    })
  })

  it('should use new upstreams after setUpstreams (a restarted child on a new port)', async () => {
    const replacement = await startEchoUpstream('api1-restarted')
    try {
      router.setUpstreams({ api: [{ name: 'api1', host: '127.0.0.1', port: replacement.port }], persisters: new Map() })
      for (let i = 0; i < 3; i++) expect((await call('GET', '/_matrix/client/versions')).echo.upstream).to.equal('api1-restarted')
      expect(router.upstreams().api).to.deep.equal([{ name: 'api1', host: '127.0.0.1', port: replacement.port }])
    } finally {
      await replacement.close()
    }
  })

  it('should close while a long poll is in flight', async () => {
    const pending = fetch(`${base}${client}/rooms/!r:hs.test/hang`).catch((err: unknown) => err)
    await new Promise((r) => setTimeout(r, 50))
    await router.close(100)
    expect(await pending).to.be.instanceOf(Error)
    router = createRouter({ upstreams: upstreamsOf(['api1'], []), shardMap, log: silentLogger() })
  })
})
