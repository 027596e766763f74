import { expect } from 'chai'
import { hashAccessToken } from '../../../storage/access-token.js'
import { registrationMac } from '../../../api/routes/admin-register.js'
import { sharedSecret, startApi, v3, type ApiHarness } from './api-harness.js'

describe('api accounts (register, login, logout, whoami, devices)', function () {
  this.timeout(60_000)
  let h: ApiHarness
  beforeEach(async () => {
    h = await startApi()
  })
  afterEach(() => h.close())

  describe('POST /register', () => {
    it('should answer the m.login.dummy flow with a session when auth is missing', async () => {
      const res = await h.call('POST', `${v3}/register`, { body: { username: 'alice', password: 'pw-alice-1' } })
      expect(res.statusCode).to.equal(401)
      const body = res.json()
      expect(body.flows).to.deep.equal([{ stages: ['m.login.dummy'] }])
      expect(body.session).to.be.a('string').with.length.greaterThan(10)
      expect(body).to.not.have.property('errcode')
      const user = await h.t.db.selectFrom('users').selectAll().execute()
      expect(user).to.have.length(0)
    })

    it('should register with m.login.dummy and return a syt_ token whose hash (not the token) is stored', async () => {
      const res = await h.call('POST', `${v3}/register`, {
        body: { username: 'alice', password: 'pw-alice-1', auth: { type: 'm.login.dummy', session: 'abc' }, device_id: 'DEV1', initial_device_display_name: 'laptop' },
      })
      expect(res.statusCode).to.equal(200)
      const body = res.json()
      expect(body.user_id).to.equal('@alice:hs.test')
      expect(body.device_id).to.equal('DEV1')
      expect(body.home_server).to.equal('hs.test')
      expect(body.access_token).to.match(/^syt_YWxpY2U_[A-Za-z0-9]{20}_[A-Za-z0-9]{6}$/)
      const rows = await h.t.db.selectFrom('access_tokens').selectAll().execute()
      expect(rows).to.have.length(1)
      expect(Buffer.compare(rows[0]!.token_hash, hashAccessToken(body.access_token))).to.equal(0)
      const { rows: plain } = await h.t.pool.query(`SELECT count(*)::int AS n FROM access_tokens WHERE position($1::bytea in token_hash) > 0`, [Buffer.from(body.access_token)])
      expect(plain[0].n).to.equal(0)
      const user = await h.t.db.selectFrom('users').selectAll().executeTakeFirstOrThrow()
      expect(user.password_hash).to.match(/^scrypt\$32768\$8\$1\$/)
      expect(user.password_hash).to.not.include('pw-alice-1')
      const device = await h.t.db.selectFrom('devices').selectAll().executeTakeFirstOrThrow()
      expect(device.display_name).to.equal('laptop')
      const whoami = await h.call('GET', `${v3}/account/whoami`, { token: body.access_token })
      expect(whoami.json()).to.deep.equal({ user_id: '@alice:hs.test', device_id: 'DEV1', is_guest: false })
    })

    it('should answer inhibit_login with the user ID only', async () => {
      const res = await h.call('POST', `${v3}/register`, { body: { username: 'bob', password: 'pw', auth: { type: 'm.login.dummy' }, inhibit_login: true } })
      expect(res.statusCode).to.equal(200)
      expect(res.json()).to.deep.equal({ user_id: '@bob:hs.test', home_server: 'hs.test' })
      expect(await h.t.db.selectFrom('access_tokens').selectAll().execute()).to.have.length(0)
    })

    it('should generate a username when none is given', async () => {
      const res = await h.call('POST', `${v3}/register`, { body: { password: 'pw', auth: { type: 'm.login.dummy' } } })
      expect(res.statusCode).to.equal(200)
      expect(res.json().user_id).to.match(/^@u[a-z0-9]{12}:hs\.test$/)
    })

    it('should refuse a taken username with M_USER_IN_USE, before the auth round', async () => {
      await h.register('carol')
      const res = await h.call('POST', `${v3}/register`, { body: { username: 'carol', password: 'pw' } })
      expect(res.statusCode).to.equal(400)
      expect(res.json().errcode).to.equal('M_USER_IN_USE')
    })

    for (const bad of ['Carol', 'ca rol', '_bridge', '12345', 'a'.repeat(250), 'émile']) {
      it(`should refuse the username ${JSON.stringify(bad.slice(0, 20))} with M_INVALID_USERNAME`, async () => {
        const res = await h.call('POST', `${v3}/register`, { body: { username: bad, password: 'pw', auth: { type: 'm.login.dummy' } } })
        expect(res.statusCode).to.equal(400)
        expect(res.json().errcode).to.equal('M_INVALID_USERNAME')
      })
    }

    it('should refuse a registration without password with 400 M_MISSING_PARAM', async () => {
      const res = await h.call('POST', `${v3}/register`, { body: { username: 'nopass', auth: { type: 'm.login.dummy' } } })
      expect([res.statusCode, res.json().errcode]).to.deep.equal([400, 'M_MISSING_PARAM'])
      expect(await h.t.db.selectFrom('users').selectAll().execute()).to.have.length(0)
    })

    it('should refuse an unsupported auth type with 400 M_UNRECOGNIZED', async () => {
      const res = await h.call('POST', `${v3}/register`, { body: { username: 'dave', password: 'pw', auth: { type: 'm.login.recaptcha' } } })
      expect(res.statusCode).to.equal(400)
      expect(res.json().errcode).to.equal('M_UNRECOGNIZED')
    })

    it('should refuse guests with 403 M_GUEST_ACCESS_FORBIDDEN', async () => {
      const res = await h.call('POST', `${v3}/register?kind=guest`, { body: {} })
      expect(res.statusCode).to.equal(403)
      expect(res.json().errcode).to.equal('M_GUEST_ACCESS_FORBIDDEN')
    })

    it('should refuse a wrongly typed field with M_BAD_JSON naming it', async () => {
      const res = await h.call('POST', `${v3}/register`, { body: { username: 'erin', password: 12345, auth: { type: 'm.login.dummy' } } })
      expect(res.statusCode).to.equal(400)
      expect(res.json().errcode).to.equal('M_BAD_JSON')
      expect(res.json().error).to.include('password')
    })

    it('should work under the r0 prefix too', async () => {
      const res = await h.call('POST', '/_matrix/client/r0/register', { body: { username: 'frank', password: 'pw', auth: { type: 'm.login.dummy' } } })
      expect(res.statusCode).to.equal(200)
      expect(res.json().user_id).to.equal('@frank:hs.test')
    })
  })

  describe('GET /register/available', () => {
    it('should say available, M_USER_IN_USE or M_INVALID_USERNAME', async () => {
      await h.register('gina')
      expect((await h.call('GET', `${v3}/register/available?username=henry`)).json()).to.deep.equal({ available: true })
      const taken = await h.call('GET', `${v3}/register/available?username=gina`)
      expect([taken.statusCode, taken.json().errcode]).to.deep.equal([400, 'M_USER_IN_USE'])
      const invalid = await h.call('GET', `${v3}/register/available?username=Gina`)
      expect([invalid.statusCode, invalid.json().errcode]).to.deep.equal([400, 'M_INVALID_USERNAME'])
      const missing = await h.call('GET', `${v3}/register/available`)
      expect([missing.statusCode, missing.json().errcode]).to.deep.equal([400, 'M_INVALID_PARAM'])
    })

    it('should answer the registration token validity check 403 when no token is required', async () => {
      const res = await h.call('GET', '/_matrix/client/v1/register/m.login.registration_token/validity?token=abc')
      expect([res.statusCode, res.json().errcode]).to.deep.equal([403, 'M_FORBIDDEN'])
    })
  })

  describe('closed registration and the shared secret', () => {
    let closed: ApiHarness
    beforeEach(async () => {
      closed = await startApi({ registration: { enabled: false, shared_secret: sharedSecret } })
    })
    afterEach(() => closed.close())

    it('should refuse /register and /register/available with 403 M_FORBIDDEN', async () => {
      const res = await closed.call('POST', `${v3}/register`, { body: { username: 'ivan', password: 'pw', auth: { type: 'm.login.dummy' } } })
      expect([res.statusCode, res.json().errcode]).to.deep.equal([403, 'M_FORBIDDEN'])
      const available = await closed.call('GET', `${v3}/register/available?username=ivan`)
      expect([available.statusCode, available.json().errcode]).to.deep.equal([403, 'M_FORBIDDEN'])
    })

    it('should register through the shared-secret admin API with a valid nonce and MAC', async () => {
      const { nonce } = (await closed.call('GET', '/_synapse/admin/v1/register')).json()
      const request = { nonce, username: 'judy', password: 'pw-judy', admin: false }
      const res = await closed.call('POST', '/_synapse/admin/v1/register', { body: { ...request, mac: registrationMac(sharedSecret, request) } })
      expect(res.statusCode).to.equal(200)
      expect(res.json().user_id).to.equal('@judy:hs.test')
      const whoami = await closed.call('GET', `${v3}/account/whoami`, { token: res.json().access_token })
      expect(whoami.json().user_id).to.equal('@judy:hs.test')
    })

    it('should refuse a wrong MAC (403) and a forged nonce (400), registering nobody', async () => {
      const { nonce } = (await closed.call('GET', '/_synapse/admin/v1/register')).json()
      const request = { nonce, username: 'mallory', password: 'pw', admin: false }
      const wrongMac = await closed.call('POST', '/_synapse/admin/v1/register', { body: { ...request, mac: registrationMac('another-secret-0123456789', request) } })
      expect([wrongMac.statusCode, wrongMac.json().errcode]).to.deep.equal([403, 'M_FORBIDDEN'])
      const forged = { ...request, nonce: `${Date.now().toString(36)}.00.0000` }
      const forgedRes = await closed.call('POST', '/_synapse/admin/v1/register', { body: { ...forged, mac: registrationMac(sharedSecret, forged) } })
      expect(forgedRes.statusCode).to.equal(400)
      expect(await closed.t.db.selectFrom('users').selectAll().execute()).to.have.length(0)
    })
  })

  it('should refuse shared-secret registration when no secret is configured', async () => {
    const open = await startApi({ registration: { enabled: true } })
    try {
      const res = await open.call('GET', '/_synapse/admin/v1/register')
      expect(res.statusCode).to.equal(400)
    } finally {
      await open.close()
    }
  })

  describe('/login', () => {
    it('should list the password flow', async () => {
      const res = await h.call('GET', `${v3}/login`)
      expect(res.json()).to.deep.equal({ flows: [{ type: 'm.login.password' }] })
    })

    it('should log in with identifier m.id.user and with the legacy user field (full ID, any case)', async () => {
      await h.register('kate', 'pw-kate-1')
      const a = await h.call('POST', `${v3}/login`, { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: 'kate' }, password: 'pw-kate-1' } })
      expect(a.statusCode).to.equal(200)
      expect(a.json().user_id).to.equal('@kate:hs.test')
      expect(a.json().access_token).to.match(/^syt_/)
      const b = await h.call('POST', `${v3}/login`, { body: { type: 'm.login.password', user: '@KATE:hs.test', password: 'pw-kate-1' } })
      expect(b.statusCode).to.equal(200)
      expect(b.json().device_id).to.not.equal(a.json().device_id)
      expect((await h.call('GET', `${v3}/devices`, { token: b.json().access_token })).json().devices).to.have.length(3)
    })

    it('should refuse a wrong password and an unknown user alike with 403 M_FORBIDDEN', async () => {
      await h.register('liam', 'pw-liam-1')
      const wrong = await h.call('POST', `${v3}/login`, { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: 'liam' }, password: 'nope' } })
      const unknown = await h.call('POST', `${v3}/login`, { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: 'nobody' }, password: 'nope' } })
      expect([wrong.statusCode, wrong.json().errcode]).to.deep.equal([403, 'M_FORBIDDEN'])
      expect(unknown.json()).to.deep.equal(wrong.json())
    })

    it('should rate limit failed attempts with 429 M_LIMIT_EXCEEDED and retry_after_ms', async () => {
      await h.register('mia', 'pw-mia-1')
      const attempt = () => h.call('POST', `${v3}/login`, { body: { type: 'm.login.password', user: 'mia', password: 'wrong' } })
      for (let i = 0; i < 5; i++) expect((await attempt()).statusCode).to.equal(403)
      const limited = await attempt()
      expect(limited.statusCode).to.equal(429)
      expect(limited.json().errcode).to.equal('M_LIMIT_EXCEEDED')
      expect(limited.json().retry_after_ms).to.be.a('number').greaterThan(0)
    })

    it('should refuse unknown login types and identifier types with 400', async () => {
      const type = await h.call('POST', `${v3}/login`, { body: { type: 'm.login.token', token: 'x' } })
      expect([type.statusCode, type.json().errcode]).to.deep.equal([400, 'M_UNKNOWN'])
      const id = await h.call('POST', `${v3}/login`, { body: { type: 'm.login.password', identifier: { type: 'm.id.phone' }, password: 'x' } })
      expect(id.statusCode).to.equal(400)
    })

    it('should re-use a known device_id and revoke its previous token', async () => {
      const first = await h.register('noah', 'pw-noah-1', { device_id: 'PHONE' })
      const again = await h.call('POST', `${v3}/login`, { body: { type: 'm.login.password', user: 'noah', password: 'pw-noah-1', device_id: 'PHONE' } })
      expect(again.json().device_id).to.equal('PHONE')
      const old = await h.call('GET', `${v3}/account/whoami`, { token: first.access_token })
      expect([old.statusCode, old.json().errcode]).to.deep.equal([401, 'M_UNKNOWN_TOKEN'])
      expect((await h.call('GET', `${v3}/devices`, { token: again.json().access_token })).json().devices).to.have.length(1)
    })
  })

  describe('access tokens', () => {
    it('should accept the token as a Bearer header and as ?access_token=, but not both', async () => {
      const s = await h.register('olga')
      expect((await h.call('GET', `${v3}/account/whoami?access_token=${s.access_token}`)).statusCode).to.equal(200)
      const both = await h.call('GET', `${v3}/account/whoami?access_token=${s.access_token}`, { token: s.access_token })
      expect([both.statusCode, both.json().errcode]).to.deep.equal([400, 'M_MISSING_TOKEN'])
    })

    it('should answer 401 M_MISSING_TOKEN without a token and M_UNKNOWN_TOKEN (soft_logout false) for a bad one', async () => {
      const missing = await h.call('GET', `${v3}/account/whoami`)
      expect([missing.statusCode, missing.json().errcode]).to.deep.equal([401, 'M_MISSING_TOKEN'])
      const s = await h.register('pete')
      const tampered = s.access_token.slice(0, -8) + 'AAAAAAAA'
      for (const token of [tampered, 'syt_cGV0ZQ_aaaaaaaaaaaaaaaaaaaa_000000', 'not-a-token']) {
        const res = await h.call('GET', `${v3}/account/whoami`, { token })
        expect(res.statusCode).to.equal(401)
        expect(res.json()).to.deep.equal({ errcode: 'M_UNKNOWN_TOKEN', error: 'Unknown or expired access token', soft_logout: false })
      }
    })
  })

  describe('token cache', () => {
    it("should serve a token revoked by another process until the cache TTL ends, then refuse it", async () => {
      let now = Date.now()
      const cached = await startApi({ tokenCacheTtlMs: 30_000, clock: () => now })
      try {
        const s = await cached.register('zoe')
        expect((await cached.call('GET', `${v3}/account/whoami`, { token: s.access_token })).statusCode).to.equal(200)
        await cached.t.db.deleteFrom('access_tokens').execute()
        now += 29_000
        expect((await cached.call('GET', `${v3}/account/whoami`, { token: s.access_token })).statusCode).to.equal(200)
        now += 2_000
        expect((await cached.call('GET', `${v3}/account/whoami`, { token: s.access_token })).statusCode).to.equal(401)
      } finally {
        await cached.close()
      }
    })
  })

  describe('/logout', () => {
    it('should invalidate the token at once (even though it was cached) and delete the device', async () => {
      const s = await h.register('quinn')
      expect((await h.call('GET', `${v3}/account/whoami`, { token: s.access_token })).statusCode).to.equal(200)
      expect((await h.call('POST', `${v3}/logout`, { token: s.access_token })).json()).to.deep.equal({})
      const after = await h.call('GET', `${v3}/account/whoami`, { token: s.access_token })
      expect([after.statusCode, after.json().errcode]).to.deep.equal([401, 'M_UNKNOWN_TOKEN'])
      expect(await h.t.db.selectFrom('devices').selectAll().execute()).to.have.length(0)
    })

    it('should log out every device with /logout/all and leave other users alone', async () => {
      const a = await h.register('rita', 'pw-rita-1')
      const b = (await h.call('POST', `${v3}/login`, { body: { type: 'm.login.password', user: 'rita', password: 'pw-rita-1' } })).json()
      const other = await h.register('sam')
      for (const token of [a.access_token, b.access_token, other.access_token]) {
        expect((await h.call('GET', `${v3}/account/whoami`, { token })).statusCode).to.equal(200)
      }
      expect((await h.call('POST', `${v3}/logout/all`, { token: b.access_token, body: {} })).statusCode).to.equal(200)
      for (const token of [a.access_token, b.access_token]) {
        expect((await h.call('GET', `${v3}/account/whoami`, { token })).statusCode).to.equal(401)
      }
      expect((await h.call('GET', `${v3}/account/whoami`, { token: other.access_token })).statusCode).to.equal(200)
    })
  })

  describe('/devices', () => {
    it('should list, get and rename devices; unknown devices are 404 M_NOT_FOUND', async () => {
      const s = await h.register('tina', 'pw', { device_id: 'TINA1', initial_device_display_name: 'first' })
      const list = (await h.call('GET', `${v3}/devices`, { token: s.access_token })).json()
      expect(list.devices).to.have.length(1)
      expect(list.devices[0]).to.include({ device_id: 'TINA1', display_name: 'first' })
      expect((await h.call('PUT', `${v3}/devices/TINA1`, { token: s.access_token, body: { display_name: 'renamed' } })).statusCode).to.equal(200)
      expect((await h.call('GET', `${v3}/devices/TINA1`, { token: s.access_token })).json().display_name).to.equal('renamed')
      for (const [method, body] of [['GET', undefined], ['PUT', { display_name: 'x' }]] as const) {
        const res = await h.call(method, `${v3}/devices/NOPE`, { token: s.access_token, body })
        expect([res.statusCode, res.json().errcode]).to.deep.equal([404, 'M_NOT_FOUND'])
      }
    })

    it('should delete a device only after password user-interactive auth', async () => {
      const s = await h.register('uma', 'pw-uma-1', { device_id: 'KEEP' })
      const other = (await h.call('POST', `${v3}/login`, { body: { type: 'm.login.password', user: 'uma', password: 'pw-uma-1', device_id: 'GONE' } })).json()
      const first = await h.call('DELETE', `${v3}/devices/GONE`, { token: s.access_token })
      expect(first.statusCode).to.equal(401)
      expect(first.json().flows).to.deep.equal([{ stages: ['m.login.password'] }])
      const session = first.json().session
      const wrong = await h.call('DELETE', `${v3}/devices/GONE`, {
        token: s.access_token,
        body: { auth: { type: 'm.login.password', session, identifier: { type: 'm.id.user', user: 'uma' }, password: 'bad' } },
      })
      expect(wrong.statusCode).to.equal(401)
      expect(wrong.json()).to.include({ errcode: 'M_FORBIDDEN', session })
      expect((await h.call('GET', `${v3}/account/whoami`, { token: other.access_token })).statusCode).to.equal(200)
      const ok = await h.call('DELETE', `${v3}/devices/GONE`, {
        token: s.access_token,
        body: { auth: { type: 'm.login.password', session, identifier: { type: 'm.id.user', user: 'uma' }, password: 'pw-uma-1' } },
      })
      expect(ok.statusCode).to.equal(200)
      expect((await h.call('GET', `${v3}/account/whoami`, { token: other.access_token })).statusCode).to.equal(401)
      const devices = (await h.call('GET', `${v3}/devices`, { token: s.access_token })).json().devices
      expect(devices.map((d: { device_id: string }) => d.device_id)).to.deep.equal(['KEEP'])
    })

    it('should refuse password auth naming another user with 403', async () => {
      const s = await h.register('vera', 'pw-vera-1')
      await h.register('walt', 'pw-walt-1')
      const res = await h.call('DELETE', `${v3}/devices/${s.device_id}`, {
        token: s.access_token,
        body: { auth: { type: 'm.login.password', user: 'walt', password: 'pw-walt-1' } },
      })
      expect([res.statusCode, res.json().errcode]).to.deep.equal([403, 'M_FORBIDDEN'])
    })

    it('should delete several devices with POST /delete_devices', async () => {
      const s = await h.register('xena', 'pw-xena-1', { device_id: 'X0' })
      for (const device_id of ['X1', 'X2']) {
        await h.call('POST', `${v3}/login`, { body: { type: 'm.login.password', user: 'xena', password: 'pw-xena-1', device_id } })
      }
      const res = await h.call('POST', `${v3}/delete_devices`, {
        token: s.access_token,
        body: { devices: ['X1', 'X2'], auth: { type: 'm.login.password', user: 'xena', password: 'pw-xena-1' } },
      })
      expect(res.statusCode).to.equal(200)
      expect((await h.call('GET', `${v3}/devices`, { token: s.access_token })).json().devices).to.have.length(1)
    })
  })

  describe('/account/password', () => {
    it('should change the password and log out the other devices', async () => {
      const s = await h.register('yuri', 'old-password')
      const other = (await h.call('POST', `${v3}/login`, { body: { type: 'm.login.password', user: 'yuri', password: 'old-password' } })).json()
      const res = await h.call('POST', `${v3}/account/password`, {
        token: s.access_token,
        body: { new_password: 'new-password', auth: { type: 'm.login.password', user: 'yuri', password: 'old-password' } },
      })
      expect(res.statusCode).to.equal(200)
      expect((await h.call('GET', `${v3}/account/whoami`, { token: s.access_token })).statusCode).to.equal(200)
      expect((await h.call('GET', `${v3}/account/whoami`, { token: other.access_token })).statusCode).to.equal(401)
      const oldLogin = await h.call('POST', `${v3}/login`, { body: { type: 'm.login.password', user: 'yuri', password: 'old-password' } })
      expect(oldLogin.statusCode).to.equal(403)
      const newLogin = await h.call('POST', `${v3}/login`, { body: { type: 'm.login.password', user: 'yuri', password: 'new-password' } })
      expect(newLogin.statusCode).to.equal(200)
    })
  })
})
