import { expect } from 'chai'
import type { FastifyPluginAsync } from 'fastify'
import { clientRoute } from '../../../api/client-route.js'
import { MatrixError } from '../../../api/errors.js'
import { requireUser } from '../../../api/require-user.js'
import { StorageError } from '../../../storage/errors.js'
import { startApi, v3, type ApiHarness } from './api-harness.js'

/** A plugin as the rooms/sync helpers will write them: authenticated, both prefixes, throwing. */
const testPlugin: FastifyPluginAsync = async (app) => {
  clientRoute<{ Params: { what: string } }>(app, {
    method: 'GET',
    path: '/test/:what',
    schema: { params: { type: 'object', properties: { what: { type: 'string' } } } },
    handler: async (request) => {
      const requester = await requireUser(request)
      switch (request.params.what) {
        case 'me':
          return { ...requester, tokenId: String(requester.tokenId), server: app.myelin.config.server_name }
        case 'forbidden':
          throw new StorageError('ES_FORBIDDEN', 'not a member of the room')
        case 'too-large':
          throw new StorageError('ES_EVENT_TOO_LARGE', 'event too large')
        case 'unavailable':
          throw new StorageError('ES_UNAVAILABLE', 'persister p1 is down at 10.0.0.7')
        case 'room':
          throw new StorageError('ES_ROOM_NOT_FOUND', 'no such room')
        case 'bad-token':
          throw new StorageError('ES_INVALID_TOKEN', 'malformed stream token')
        case 'matrix':
          throw new MatrixError(429, 'M_LIMIT_EXCEEDED', 'slow down', { retry_after_ms: 1500 })
        case 'bug':
          throw new TypeError('secret internal detail: cannot read x of undefined')
        case 'sql':
          await app.myelin.db.selectFrom('users').select('user_id').where('user_id', '=', 'a\u0000b').execute()
          return {}
        default:
          return {}
      }
    },
  })
}

describe('api app foundation (errors, CORS, limits, logging, metrics, plugins)', function () {
  this.timeout(60_000)
  let h: ApiHarness
  beforeEach(async () => {
    h = await startApi({ plugins: [testPlugin], bodyLimit: 64 * 1024 })
  })
  afterEach(() => h.close())

  describe('Matrix errors', () => {
    it('should answer 404 M_UNRECOGNIZED for unknown paths and 405 M_UNRECOGNIZED for a wrong method', async () => {
      for (const url of [`${v3}/no/such/thing`, '/_matrix/client/v3', '/', '/_matrix/client/v7/account/whoami']) {
        const res = await h.call('GET', url)
        expect([res.statusCode, res.json().errcode], url).to.deep.equal([404, 'M_UNRECOGNIZED'])
      }
      const wrong = await h.call('DELETE', `${v3}/account/whoami`)
      expect([wrong.statusCode, wrong.json().errcode]).to.deep.equal([405, 'M_UNRECOGNIZED'])
      const wrongParam = await h.call('POST', `${v3}/devices/ABC`, { body: {} })
      expect(wrongParam.statusCode).to.equal(405)
    })

    it('should answer 400 M_NOT_JSON for unparseable or missing bodies and M_BAD_JSON for non-objects', async () => {
      for (const raw of ['{"username":', 'not json', ' ']) {
        const res = await h.call('POST', `${v3}/register`, { raw })
        expect([res.statusCode, res.json().errcode], raw).to.deep.equal([400, 'M_NOT_JSON'])
      }
      const empty = await h.call('POST', `${v3}/login`, {})
      expect([empty.statusCode, empty.json().errcode]).to.deep.equal([400, 'M_NOT_JSON'])
      for (const raw of ['[]', '"x"', '12', 'null']) {
        const res = await h.call('POST', `${v3}/login`, { raw })
        expect([res.statusCode, res.json().errcode], raw).to.deep.equal([400, 'M_BAD_JSON'])
      }
    })

    it('should parse JSON whatever the Content-Type says', async () => {
      const res = await h.call('POST', `${v3}/login`, {
        raw: JSON.stringify({ type: 'm.login.password', user: 'nobody', password: 'x' }),
        headers: { 'content-type': 'text/plain' },
      })
      expect(res.statusCode).to.equal(403)
    })

    it('should answer M_BAD_JSON naming the field for schema failures', async () => {
      const res = await h.call('POST', `${v3}/login`, { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: 7 }, password: 'x' } })
      expect(res.statusCode).to.equal(400)
      expect(res.json().errcode).to.equal('M_BAD_JSON')
      expect(res.json().error).to.include('identifier/user')
    })

    it('should refuse U+0000 and absurd nesting with M_BAD_JSON before any handler runs', async () => {
      const nul = await h.call('POST', `${v3}/register`, { raw: '{"username":"a\\u0000b","auth":{"type":"m.login.dummy"}}' })
      expect([nul.statusCode, nul.json().errcode]).to.deep.equal([400, 'M_BAD_JSON'])
      const deep = await h.call('POST', `${v3}/login`, { raw: `{"type":${'['.repeat(500)}${']'.repeat(500)}}` })
      expect([deep.statusCode, deep.json().errcode]).to.deep.equal([400, 'M_BAD_JSON'])
      expect(await h.t.db.selectFrom('users').selectAll().execute()).to.have.length(0)
    })

    it('should answer 413 M_TOO_LARGE for bodies over the limit', async () => {
      const res = await h.call('POST', `${v3}/register`, { body: { username: 'big', password: 'x'.repeat(70 * 1024) } })
      expect([res.statusCode, res.json().errcode]).to.deep.equal([413, 'M_TOO_LARGE'])
    })

    it('should answer 400 for malformed URLs and query parameters of the wrong shape', async () => {
      const url = await h.call('GET', `${v3}/profile/%E0%A4%A`)
      expect(url.statusCode).to.equal(400)
      expect(url.json().errcode).to.be.a('string')
      const query = await h.call('POST', `${v3}/register?kind=robot`, { body: {} })
      expect([query.statusCode, query.json().errcode]).to.deep.equal([400, 'M_INVALID_PARAM'])
    })

    it('should map StorageErrors and MatrixErrors thrown by plugins, and hide internal errors', async () => {
      const s = await h.register('alice')
      const cases: [string, number, string, Record<string, unknown>?][] = [
        ['forbidden', 403, 'M_FORBIDDEN'],
        ['too-large', 413, 'M_TOO_LARGE'],
        ['unavailable', 503, 'M_UNKNOWN', { retry_after_ms: 1000 }],
        ['room', 404, 'M_NOT_FOUND'],
        ['bad-token', 400, 'M_INVALID_PARAM'],
        ['matrix', 429, 'M_LIMIT_EXCEEDED', { retry_after_ms: 1500 }],
        ['bug', 500, 'M_UNKNOWN'],
        ['sql', 400, 'M_INVALID_PARAM'],
      ]
      for (const [what, status, errcode, extra] of cases) {
        const res = await h.call('GET', `${v3}/test/${what}`, { token: s.access_token })
        expect([res.statusCode, res.json().errcode], what).to.deep.equal([status, errcode])
        if (extra) expect(res.json(), what).to.include(extra)
      }
      const bug = await h.call('GET', `${v3}/test/bug`, { token: s.access_token })
      expect(bug.body).to.not.include('secret internal detail')
      expect(bug.body).to.not.include('at ')
      const unavailable = await h.call('GET', `${v3}/test/unavailable`, { token: s.access_token })
      expect(unavailable.body).to.not.include('10.0.0.7')
      expect(h.logs.some((l) => l.includes('secret internal detail') && l.includes('"level":50'))).to.equal(true)
    })
  })

  describe('plugins', () => {
    it('should give plugins requireUser, the runtime and both prefixes', async () => {
      const s = await h.register('bob')
      for (const prefix of ['v3', 'r0']) {
        const res = await h.call('GET', `/_matrix/client/${prefix}/test/me`, { token: s.access_token })
        expect(res.statusCode).to.equal(200)
        expect(res.json()).to.include({ userId: '@bob:hs.test', deviceId: s.device_id, server: 'hs.test' })
        expect(res.json().tokenId).to.match(/^\d+$/)
      }
      const anonymous = await h.call('GET', `${v3}/test/me`)
      expect([anonymous.statusCode, anonymous.json().errcode]).to.deep.equal([401, 'M_MISSING_TOKEN'])
    })
  })

  describe('CORS', () => {
    it('should answer preflights with 204 and put CORS headers on every response, errors included', async () => {
      const preflight = await h.call('OPTIONS', `${v3}/account/whoami`, { headers: { origin: 'https://app.example', 'access-control-request-method': 'GET' } })
      expect(preflight.statusCode).to.equal(204)
      expect(preflight.headers['access-control-allow-origin']).to.equal('*')
      expect(String(preflight.headers['access-control-allow-headers'])).to.include('Authorization')
      const unknownPreflight = await h.call('OPTIONS', `${v3}/whatever/path`)
      expect(unknownPreflight.statusCode).to.equal(204)
      for (const res of [
        await h.call('GET', '/_matrix/client/versions'),
        await h.call('GET', `${v3}/account/whoami`),
        await h.call('GET', `${v3}/nope`),
        await h.call('POST', `${v3}/login`, { raw: '{' }),
      ]) {
        expect(res.headers['access-control-allow-origin']).to.equal('*')
        expect(String(res.headers['access-control-allow-methods'])).to.include('PUT')
      }
    })
  })

  describe('logging', () => {
    it('should never write access tokens or passwords to the log', async () => {
      const s = await h.register('carol', 'carols-password-123')
      await h.call('GET', `${v3}/account/whoami`, { token: s.access_token })
      await h.call('GET', `${v3}/account/whoami?access_token=${s.access_token}`)
      await h.call('GET', `${v3}/account/whoami?since=1&access_token=${s.access_token}&x=1`)
      await h.call('GET', `${v3}/account/whoami?access_token=${s.access_token}`, { token: s.access_token })
      await h.call('GET', `${v3}/test/bug?access_token=${s.access_token}`)
      await h.call('POST', `${v3}/login`, { body: { type: 'm.login.password', user: 'carol', password: 'carols-password-123' } })
      const login = (await h.call('POST', `${v3}/login`, { body: { type: 'm.login.password', user: 'carol', password: 'carols-password-123' } })).json()
      await h.call('GET', `${v3}/account/whoami?access_token=${login.access_token}`)
      await h.call('GET', `${v3}/nope?access_token=${login.access_token}`)
      await h.call('POST', `${v3}/logout?access_token=${login.access_token}`)
      await h.call('POST', `${v3}/login`, { body: { type: 'm.login.password', user: 'carol', password: 'wrong-password-456' } })
      await h.call('POST', `${v3}/login`, { raw: '{"password":"half-a-password' })
      expect(h.logs.length).to.be.greaterThan(10)
      const text = h.logs.join('\n')
      for (const secret of [s.access_token, login.access_token, 'carols-password-123', 'wrong-password-456', 'half-a-password']) {
        expect(text).to.not.include(secret)
      }
      expect(text).to.include('access_token=[redacted]')
      const completed = h.logs.map((l) => JSON.parse(l)).filter((l) => l.msg === 'request completed')
      expect(completed.some((l) => l.route === '/_matrix/client/v3/account/whoami' && l.status === 200)).to.equal(true)
    })
  })

  describe('metrics', () => {
    it('should record request durations per method, route pattern and status', async () => {
      await h.call('GET', '/_matrix/client/versions')
      await h.call('GET', `${v3}/account/whoami`)
      await h.call('GET', `${v3}/devices/ABC`)
      await h.call('GET', `${v3}/no/such/path/1`)
      await h.call('GET', `${v3}/no/such/path/2`)
      const text = await h.metrics.metrics()
      expect(text).to.match(/myelin_http_request_duration_seconds_count\{method="GET",route="\/_matrix\/client\/versions",status="200"\} 1/)
      expect(text).to.match(/myelin_http_request_duration_seconds_count\{method="GET",route="\/_matrix\/client\/v3\/devices\/:deviceId",status="401"\} 1/)
      expect(text).to.match(/myelin_http_request_duration_seconds_count\{method="GET",route="unmatched",status="404"\} 2/)
    })
  })

  describe('server info', () => {
    it('should answer /versions without a token and /capabilities with one', async () => {
      const versions = (await h.call('GET', '/_matrix/client/versions')).json()
      expect(versions.versions).to.include.members(['r0.6.1', 'v1.1', 'v1.11'])
      expect(versions.unstable_features).to.deep.equal({ 'org.matrix.simplified_msc3575': true })
      expect((await h.call('GET', `${v3}/capabilities`)).statusCode).to.equal(401)
      const s = await h.register('dave')
      const caps = (await h.call('GET', `${v3}/capabilities`, { token: s.access_token })).json().capabilities
      expect(caps['m.change_password']).to.deep.equal({ enabled: true })
      expect(caps['m.room_versions']).to.deep.equal({ default: '11', available: { '11': 'stable' } })
      expect((await h.call('GET', '/_matrix/client/r0/capabilities', { token: s.access_token })).statusCode).to.equal(200)
    })

    it('should answer the start-up stubs: turnServer, thirdparty protocols, 3pid', async () => {
      const s = await h.register('erin')
      expect((await h.call('GET', `${v3}/voip/turnServer`, { token: s.access_token })).json()).to.deep.equal({})
      expect((await h.call('GET', `${v3}/thirdparty/protocols`, { token: s.access_token })).json()).to.deep.equal({})
      expect((await h.call('GET', `${v3}/account/3pid`, { token: s.access_token })).json()).to.deep.equal({ threepids: [] })
      expect((await h.call('GET', `${v3}/voip/turnServer`)).statusCode).to.equal(401)
    })
  })
})
