import { expect } from 'chai'
import fc from 'fast-check'
import { startApi, v3, type ApiHarness, type Session } from './api-harness.js'

/**
 * Malformed input against the account-side endpoints: whatever a client sends, the answer is a
 * Matrix error or a success, never a 500, and the process keeps serving.
 */
describe('api fuzz (account-side endpoints)', function () {
  this.timeout(120_000)
  let h: ApiHarness
  let s: Session
  before(async () => {
    h = await startApi({ failedLoginLimit: { burst: 1_000_000, perSecond: 1 } })
    s = await h.register('fuzz', 'fuzz-password')
  })
  after(() => h.close())

  const user = encodeURIComponent('@fuzz:hs.test')
  const paths = [
    '/register', '/register/available?username=', '/login', '/account/whoami', '/account/password', '/devices',
    '/devices/X', '/delete_devices', '/capabilities', '/pushrules/', '/pushrules/global/override/r',
    '/pushrules/global/content/r/enabled', '/pushrules/global/room/r/actions', `/user/${user}/filter`, `/user/${user}/filter/0`,
    `/user/${user}/account_data/t`, `/user/${user}/rooms/%21r%3Ahs.test/account_data/t`, `/profile/${user}`,
    `/profile/${user}/displayname`, `/presence/${user}/status`, '/voip/turnServer',
    '/rooms/%21r%3Ahs.test/receipt/m.read/%24e', '/rooms/%21r%3Ahs.test/receipt/m.fully_read', '/rooms/%21r%3Ahs.test/read_markers',
    `/rooms/%21r%3Ahs.test/typing/${user}`, '/user_directory/search', '/keys/upload', '/keys/query', '/keys/claim',
    '/keys/changes?from=s1_1&to=s1_1', '/keys/device_signing/upload', '/keys/signatures/upload', '/pushers', '/pushers/set', '/notifications?limit=5', '/notifications?from=1&only=highlight',
    `/user/${user}/rooms/%21r%3Ahs.test/tags`, `/user/${user}/rooms/%21r%3Ahs.test/tags/m.favourite`,
  ]
  const segment = fc.oneof(fc.string({ maxLength: 12 }), fc.constantFrom('%00', '%FF', '%', '..', '%2F', '\u0000', '@x:y', '!r:hs.test', ' '))
  const jsonValue = fc.jsonValue({ maxDepth: 4 })
  const body = fc.oneof(
    fc.constant(undefined),
    fc.string({ maxLength: 40 }),
    jsonValue.map((v) => JSON.stringify(v)),
    fc.dictionary(fc.constantFrom('type', 'auth', 'username', 'password', 'identifier', 'user', 'actions', 'conditions', 'enabled', 'presence', 'displayname', 'devices', 'new_password', 'room', 'device_id', 'thread_id', 'm.read', 'm.fully_read', 'typing', 'timeout', 'search_term', 'limit', 'device_keys', 'one_time_keys', 'fallback_keys', 'master_key', 'self_signing_key', 'kind', 'app_id', 'pushkey', 'data', 'append', 'order', '@fuzz:hs.test'), jsonValue, { maxKeys: 5 }).map((o) => JSON.stringify(o)),
    fc.constant('{"a":"\\u0000"}'),
    fc.constant('{"password":"\\ud800"}'),
  )
  const token = fc.oneof(
    { arbitrary: fc.constant<string | undefined>('valid'), weight: 4 },
    { arbitrary: fc.constant(undefined), weight: 1 },
    { arbitrary: fc.string({ maxLength: 30 }), weight: 1 },
    { arbitrary: fc.constant('syt_x_y_z'), weight: 1 },
  )

  it('should never answer 500 to malformed paths, bodies, tokens and query strings', async () => {
    const statuses = new Map<number, number>()
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('GET', 'PUT', 'POST', 'DELETE'),
        fc.constantFrom(...paths),
        fc.oneof({ arbitrary: fc.constant(undefined), weight: 4 }, { arbitrary: segment, weight: 1 }),
        fc.oneof({ arbitrary: fc.constant(undefined), weight: 2 }, { arbitrary: fc.string({ maxLength: 20 }), weight: 1 }),
        body,
        token,
        fc.constantFrom('application/json', 'text/plain', 'application/x-www-form-urlencoded'),
        async (method, path, extra, query, raw, tok, contentType) => {
          let url = `${v3}${path}`
          if (extra !== undefined) url += `/${extra}`
          if (query !== undefined) url += `${url.includes('?') ? '&' : '?'}${query}`
          const headers: Record<string, string> = { 'content-type': contentType }
          if (tok !== undefined) headers.authorization = `Bearer ${tok === 'valid' ? s.access_token : tok}`
          let res
          try {
            res = await h.app.inject({ method: method as 'GET', url, headers, ...(raw !== undefined && method !== 'GET' && { payload: raw }) })
          } catch (err) {
            // light-my-request refuses some URLs/headers before the app sees them (not a server answer)
            if (err instanceof TypeError) return
            throw err
          }
          statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1)
          expect(res.statusCode, `${method} ${url} ${raw}`).to.be.below(500)
          if (res.statusCode >= 400 && res.statusCode !== 401) expect(res.json().errcode, `${method} ${url}`).to.be.a('string')
        },
      ),
      { numRuns: 3000, seed: 42 },
    )
    expect(statuses.size).to.be.greaterThan(3)
    expect((await h.call('GET', `${v3}/account/whoami`, { token: s.access_token })).statusCode).to.be.oneOf([200, 401])
  })
})
