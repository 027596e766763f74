import { expect } from 'chai'
import fc from 'fast-check'
import { startApi, v3, type ApiHarness, type Session } from './api-harness.js'

interface KeyBackupData {
  first_message_index: number
  forwarded_count: number
  is_verified: boolean
  session_data: Record<string, unknown>
}

const algorithm = 'm.megolm_backup.v1.curve25519-aes-sha2'
const key = (first: number, forwarded = 0, verified = false, tag = 'x'): KeyBackupData => ({
  first_message_index: first,
  forwarded_count: forwarded,
  is_verified: verified,
  session_data: { ciphertext: `${tag}-${first}-${forwarded}-${verified}`, mac: 'm', ephemeral: 'e' },
})

/** Synapse's rule: verified beats unverified, then the lower first index, then fewer forwards. */
function better(candidate: KeyBackupData, stored: KeyBackupData | undefined): boolean {
  if (stored === undefined) return true
  if (candidate.is_verified !== stored.is_verified) return candidate.is_verified
  if (candidate.first_message_index !== stored.first_message_index) return candidate.first_message_index < stored.first_message_index
  return candidate.forwarded_count < stored.forwarded_count
}

describe('api server-side key backup', function () {
  this.timeout(60_000)
  let h: ApiHarness
  let alice: Session
  let bob: Session
  before(async () => {
    h = await startApi()
    alice = await h.register('alice')
    bob = await h.register('bob')
  })
  after(() => h.close())

  const call = (session: Session, method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string, body?: unknown) =>
    h.call(method, `${v3}${path}`, { token: session.access_token, ...(body !== undefined && { body }) })
  const room = encodeURIComponent('!room:hs.test')

  it('should keep versions (the newest current), write keys to the current one only, keep the better key of a session, and delete', async () => {
    const none = await call(alice, 'GET', '/room_keys/version')
    expect([none.statusCode, none.json().errcode]).to.deep.equal([404, 'M_NOT_FOUND'])
    expect((await call(alice, 'POST', '/room_keys/version', { algorithm, auth_data: { public_key: 'k1' } })).json()).to.deep.equal({ version: '1' })
    expect((await call(alice, 'POST', '/room_keys/version', { algorithm, auth_data: { public_key: 'k2' } })).json()).to.deep.equal({ version: '2' })
    expect((await call(alice, 'GET', '/room_keys/version')).json()).to.deep.equal({ version: '2', algorithm, auth_data: { public_key: 'k2' }, count: 0, etag: '0' })
    expect((await call(alice, 'GET', '/room_keys/version/1')).json()).to.include({ version: '1' })
    expect((await call(bob, 'GET', '/room_keys/version')).statusCode, "alice's backup is hers").to.equal(404)

    const old = await call(alice, 'PUT', '/room_keys/keys?version=1', { rooms: { '!room:hs.test': { sessions: { s1: key(5) } } } })
    expect([old.statusCode, old.json()]).to.deep.equal([403, { errcode: 'M_WRONG_ROOM_KEYS_VERSION', error: 'Keys go to the current backup version only', current_version: '2' }])

    const put = await call(alice, 'PUT', '/room_keys/keys?version=2', { rooms: { '!room:hs.test': { sessions: { s1: key(5), s2: key(0) } } } })
    expect(put.json()).to.deep.equal({ count: 2, etag: '1' })
    // A worse key of s1 changes nothing (the etag stays); a verified one replaces it.
    expect((await call(alice, 'PUT', `/room_keys/keys/${room}/s1?version=2`, key(9))).json()).to.deep.equal({ count: 2, etag: '1' })
    expect((await call(alice, 'PUT', `/room_keys/keys/${room}?version=2`, { sessions: { s1: key(7, 0, true) } })).json()).to.deep.equal({ count: 2, etag: '2' })
    expect((await call(alice, 'GET', `/room_keys/keys/${room}/s1?version=2`)).json()).to.deep.equal(key(7, 0, true))
    expect((await call(alice, 'GET', `/room_keys/keys?version=2`)).json()).to.deep.equal({ rooms: { '!room:hs.test': { sessions: { s1: key(7, 0, true), s2: key(0) } } } })
    expect((await call(alice, 'GET', `/room_keys/keys/${encodeURIComponent('!other:hs.test')}?version=2`)).json()).to.deep.equal({ sessions: {} })

    expect((await call(alice, 'DELETE', `/room_keys/keys/${room}/s2?version=2`)).json()).to.deep.equal({ count: 1, etag: '3' })
    const gone = await call(alice, 'GET', `/room_keys/keys/${room}/s2?version=2`)
    expect([gone.statusCode, gone.json().errcode]).to.deep.equal([404, 'M_NOT_FOUND'])

    expect((await call(alice, 'PUT', '/room_keys/version/2', { algorithm, auth_data: { public_key: 'k2', signatures: {} }, version: '2' })).json()).to.deep.equal({})
    expect((await call(alice, 'GET', '/room_keys/version/2')).json()).to.deep.include({ auth_data: { public_key: 'k2', signatures: {} }, count: 1 })
    expect((await call(alice, 'DELETE', '/room_keys/version/2')).json()).to.deep.equal({})
    expect((await call(alice, 'GET', '/room_keys/version')).json(), 'the previous version is current again').to.include({ version: '1' })
    expect((await call(alice, 'GET', '/room_keys/keys?version=2')).statusCode).to.equal(404)
    expect(await h.t.db.selectFrom('e2e_room_keys').select('session_id').where('user_id', '=', alice.user_id).execute(), 'its keys went with it').to.deep.equal([])
  })

  it('should refuse malformed requests with a Matrix error', async () => {
    await call(bob, 'POST', '/room_keys/version', { algorithm, auth_data: {} })
    const cases: [string, Promise<{ statusCode: number; json: () => { errcode?: string } }>, number, string][] = [
      ['no version', call(bob, 'GET', '/room_keys/keys'), 400, 'M_INVALID_PARAM'],
      ['negative index', call(bob, 'PUT', `/room_keys/keys/${room}/s?version=1`, { ...key(0), first_message_index: -1 }), 400, 'M_BAD_JSON'],
      ['no auth_data', call(bob, 'POST', '/room_keys/version', { algorithm }), 400, 'M_BAD_JSON'],
      ['another algorithm', call(bob, 'PUT', '/room_keys/version/1', { algorithm: 'other', auth_data: {} }), 400, 'M_INVALID_PARAM'],
      ['version mismatch', call(bob, 'PUT', '/room_keys/version/1', { algorithm, auth_data: {}, version: '2' }), 400, 'M_INVALID_PARAM'],
      ['unknown version', call(bob, 'GET', '/room_keys/version/abc'), 404, 'M_NOT_FOUND'],
      ['delete unknown', call(bob, 'DELETE', '/room_keys/version/99'), 404, 'M_NOT_FOUND'],
      ['no token', h.call('GET', `${v3}/room_keys/version`), 401, 'M_MISSING_TOKEN'],
    ]
    for (const [name, request, status, errcode] of cases) {
      const res = await request
      expect([name, res.statusCode, res.json().errcode]).to.deep.equal([name, status, errcode])
    }
  })

  it('property: after any sequence of uploads, each session holds the best key uploaded for it', async () => {
    const carol = await h.register('carol')
    const upload = fc.record({
      session: fc.constantFrom('a', 'b', 'c'),
      // Narrow ranges, so that ties (which keep the stored key) are common.
      first: fc.integer({ min: 0, max: 2 }),
      forwarded: fc.integer({ min: 0, max: 1 }),
      verified: fc.boolean(),
    })
    await fc.assert(
      fc.asyncProperty(fc.array(upload, { minLength: 1, maxLength: 10 }), async (uploads) => {
        const { version } = (await call(carol, 'POST', '/room_keys/version', { algorithm, auth_data: {} })).json<{ version: string }>()
        const model = new Map<string, KeyBackupData>()
        for (const [i, u] of uploads.entries()) {
          const candidate = key(u.first, u.forwarded, u.verified, `u${i}`)
          expect((await call(carol, 'PUT', `/room_keys/keys/${room}/${u.session}?version=${version}`, candidate)).statusCode).to.equal(200)
          if (better(candidate, model.get(u.session))) model.set(u.session, candidate)
        }
        const stored = (await call(carol, 'GET', `/room_keys/keys/${room}?version=${version}`)).json<{ sessions: Record<string, KeyBackupData> }>()
        expect(stored.sessions).to.deep.equal(Object.fromEntries(model))
      }),
      { numRuns: 20 },
    )
  })
})
