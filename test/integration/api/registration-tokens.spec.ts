import { expect } from 'chai'
import type { LightMyRequestResponse } from 'fastify'
import { adminRoutes } from '../../../api/routes/admin.js'
import { startApi, sharedSecret, v3, type ApiHarness, type Session } from './api-harness.js'

const tokensUrl = '/_synapse/admin/v1/registration_tokens'

interface Token {
  token: string
  uses_allowed: number | null
  pending: number
  completed: number
  expiry_time: number | null
}

describe('api registration tokens (registration.requires_token; admin API)', function () {
  this.timeout(60_000)
  let h: ApiHarness
  let root: Session
  before(async () => {
    h = await startApi({ registration: { enabled: true, requires_token: true, shared_secret: sharedSecret }, roomRoutes: (services) => [adminRoutes(services)] })
    root = await h.registerAdmin('tk_root')
  })
  after(() => h.close())

  const admin = (method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, body?: unknown) => h.call(method, url, { token: root.access_token, ...(body !== undefined && { body }) })
  const ok = async <T>(res: Promise<LightMyRequestResponse>): Promise<T> => {
    const answer = await res
    expect(answer.statusCode, answer.body).to.equal(200)
    return answer.json<T>()
  }
  const register = (username: string, auth?: Record<string, unknown>) => h.call('POST', `${v3}/register`, { body: { username, password: 'pw-12345678', ...(auth && { auth }) } })
  const validity = async (token: string) => (await ok<{ valid: boolean }>(h.call('GET', `/_matrix/client/v1/register/m.login.registration_token/validity?token=${encodeURIComponent(token)}`))).valid
  const userExists = async (localpart: string) => (await h.t.db.selectFrom('users').select('user_id').where('user_id', '=', `@${localpart}:hs.test`).executeTakeFirst()) !== undefined

  it('should ask for a token, refuse a wrong one creating nothing, and let each token sign up as often as it allows', async () => {
    const first = await register('tk_alice')
    expect(first.statusCode).to.equal(401)
    expect(first.json()).to.deep.include({ flows: [{ stages: ['m.login.registration_token'] }] })
    const dummy = await register('tk_alice', { type: 'm.login.dummy' })
    expect([dummy.statusCode, dummy.json().errcode]).to.deep.equal([400, 'M_UNRECOGNIZED'])

    const made = await ok<Token>(admin('POST', `${tokensUrl}/new`, { uses_allowed: 2 }))
    expect(made).to.deep.include({ uses_allowed: 2, pending: 0, completed: 0, expiry_time: null })
    expect(made.token).to.match(/^[A-Za-z0-9]{16}$/)
    expect(await validity(made.token)).to.equal(true)

    const wrong = await register('tk_alice', { type: 'm.login.registration_token', token: 'not-a-token', session: 's1' })
    expect(wrong.statusCode).to.equal(401)
    expect(wrong.json()).to.deep.include({ errcode: 'M_UNAUTHORIZED', session: 's1', flows: [{ stages: ['m.login.registration_token'] }] })
    expect(await userExists('tk_alice')).to.equal(false)

    for (const name of ['tk_alice', 'tk_bob']) {
      const res = await register(name, { type: 'm.login.registration_token', token: made.token })
      expect(res.statusCode, res.body).to.equal(200)
    }
    const spent = await register('tk_carol', { type: 'm.login.registration_token', token: made.token })
    expect([spent.statusCode, spent.json().errcode]).to.deep.equal([401, 'M_UNAUTHORIZED'])
    expect(await userExists('tk_carol')).to.equal(false)
    expect(await ok<Token>(admin('GET', `${tokensUrl}/${made.token}`))).to.deep.include({ completed: 2 })
    expect(await validity(made.token)).to.equal(false)
    // A name already taken uses nothing.
    const other = await ok<Token>(admin('POST', `${tokensUrl}/new`, { token: 'tk-once', uses_allowed: 1 }))
    const taken = await register('tk_alice', { type: 'm.login.registration_token', token: other.token })
    expect([taken.statusCode, taken.json().errcode]).to.deep.equal([400, 'M_USER_IN_USE'])
    expect(await ok<Token>(admin('GET', `${tokensUrl}/tk-once`))).to.deep.include({ completed: 0 })
  })

  it('should never let concurrent sign-ups use a token more often than it allows', async () => {
    const { token } = await ok<Token>(admin('POST', `${tokensUrl}/new`, { uses_allowed: 3 }))
    const answers = await Promise.all(Array.from({ length: 12 }, (_, i) => register(`tk_rush${i}`, { type: 'm.login.registration_token', token })))
    const statuses = answers.map((a) => a.statusCode).sort()
    expect(statuses.filter((s) => s === 200)).to.have.length(3)
    expect(statuses.filter((s) => s === 401)).to.have.length(9)
    const users = await h.t.db.selectFrom('users').select('user_id').where('user_id', 'like', '@tk_rush%').execute()
    expect(users).to.have.length(3)
    expect(await ok<Token>(admin('GET', `${tokensUrl}/${token}`))).to.deep.include({ completed: 3 })
  })

  it('should list, change, expire and delete tokens, refusing bad input and anyone but admins', async () => {
    const later = Date.now() + 3_600_000
    await ok(admin('POST', `${tokensUrl}/new`, { token: 'tk-limited', uses_allowed: 0 }))
    await ok(admin('POST', `${tokensUrl}/new`, { token: 'tk-open', expiry_time: later }))
    const valid = await ok<{ registration_tokens: Token[] }>(admin('GET', `${tokensUrl}?valid=true`))
    const invalid = await ok<{ registration_tokens: Token[] }>(admin('GET', `${tokensUrl}?valid=false`))
    expect(valid.registration_tokens.map((t) => t.token)).to.include('tk-open').and.not.include('tk-limited')
    expect(invalid.registration_tokens.map((t) => t.token)).to.include('tk-limited').and.not.include('tk-open')
    expect(await ok<Token>(admin('PUT', `${tokensUrl}/tk-limited`, { uses_allowed: null }))).to.deep.include({ uses_allowed: null })
    expect(await validity('tk-limited')).to.equal(true)
    const user = await register('tk_dave', { type: 'm.login.registration_token', token: 'tk-limited' })
    expect(user.statusCode).to.equal(200)
    const dave = user.json<Session>()
    await ok(admin('DELETE', `${tokensUrl}/tk-limited`))
    expect(await validity('tk-limited')).to.equal(false)

    const cases: [string, Promise<LightMyRequestResponse>, number, string][] = [
      ['deleted', admin('GET', `${tokensUrl}/tk-limited`), 404, 'M_NOT_FOUND'],
      ['delete twice', admin('DELETE', `${tokensUrl}/tk-limited`), 404, 'M_NOT_FOUND'],
      ['taken token', admin('POST', `${tokensUrl}/new`, { token: 'tk-open' }), 400, 'M_INVALID_PARAM'],
      ['bad characters', admin('POST', `${tokensUrl}/new`, { token: 'no spaces' }), 400, 'M_BAD_JSON'],
      ['negative uses', admin('POST', `${tokensUrl}/new`, { uses_allowed: -1 }), 400, 'M_BAD_JSON'],
      ['expiry in the past', admin('PUT', `${tokensUrl}/tk-open`, { expiry_time: 1000 }), 400, 'M_INVALID_PARAM'],
      ['not an admin', h.call('GET', tokensUrl, { token: dave.access_token }), 403, 'M_FORBIDDEN'],
      ['no token', h.call('POST', `${tokensUrl}/new`, { body: {} }), 401, 'M_MISSING_TOKEN'],
      ['missing registration token', register('tk_erin', { type: 'm.login.registration_token' }), 400, 'M_MISSING_PARAM'],
    ]
    for (const [name, res, code, errcode] of cases) {
      const answer = await res
      expect([name, answer.statusCode, answer.json().errcode]).to.deep.equal([name, code, errcode])
    }
    expect(await ok<Token>(admin('GET', `${tokensUrl}/tk-open`))).to.deep.include({ expiry_time: later })
  })
})
