import { expect } from 'chai'
import { generateSigningKey, parseSigningKey, signJson, type SigningKey } from '../../../storage/events/signing.js'
import type { JsonObject } from '../../../storage/events/redaction.js'
import { roomReadRoutes } from '../../../api/routes/room-reads.js'
import { roomWriteRoutes } from '../../../api/routes/rooms.js'
import { syncRoutes } from '../../../api/routes/sync.js'
import { startApi, v3, type ApiHarness, type Session } from './api-harness.js'
import { createSharedRoom, enc, membership, sendEvents, syncAs } from './read-fixtures.js'

type Json = Record<string, unknown>
interface SyncBody {
  next_batch: string
  device_lists: { changed: string[]; left: string[] }
  device_one_time_keys_count: Record<string, number>
  device_unused_fallback_key_types: string[]
}

/** An ed25519 key pair whose key ID is `ed25519:<id>` (a device ID, or the public key for cross-signing keys). */
function keyPair(id?: string): SigningKey {
  const key = parseSigningKey(generateSigningKey())
  return { ...key, keyId: `ed25519:${id ?? key.publicKeyBase64}` }
}

/** A device's identity keys, signed by its own ed25519 key, as a client uploads them. */
function deviceKeys(session: Session, key: SigningKey): Json {
  const unsigned = {
    user_id: session.user_id,
    device_id: session.device_id,
    algorithms: ['m.olm.v1.curve25519-aes-sha2', 'm.megolm.v1.aes-sha2'],
    keys: { [`curve25519:${session.device_id}`]: `curve-${session.device_id}`, [`ed25519:${session.device_id}`]: key.publicKeyBase64 },
  }
  return signJson(unsigned, session.user_id, key)
}

/** A cross-signing key of `userId` for `usage`, signed by `signer` when given. */
function crossSigningKey(userId: string, usage: string, key: SigningKey, signer?: SigningKey): Json {
  const unsigned: JsonObject = { user_id: userId, usage: [usage], keys: { [key.keyId]: key.publicKeyBase64 } }
  return signer ? signJson(unsigned, userId, signer) : unsigned
}

describe('api end-to-end encryption keys', function () {
  this.timeout(60_000)
  let h: ApiHarness
  before(async () => {
    h = await startApi({ roomRoutes: (services) => [roomReadRoutes(services), roomWriteRoutes(services), syncRoutes(services)] })
  })
  after(() => h.close())

  const post = (session: Session, path: string, body: unknown) => h.call('POST', `${v3}${path}`, { token: session.access_token, body })
  const sync = (session: Session, query: Record<string, string> = {}) => syncAs<SyncBody>(h, session, query)
  const otk = (session: Session, id: string) => ({ [`signed_curve25519:${id}`]: signJson({ key: `otk-${id}` }, session.user_id, keyPair(session.device_id)) })

  it('should store a device’s keys, hand each one-time key out once, then the fallback key, and count what is left in /sync', async () => {
    const [alice, bob] = [await h.register('k_alice'), await h.register('k_bob')]
    const key = keyPair(alice.device_id)
    const identity = deviceKeys(alice, key)
    const upload = await post(alice, '/keys/upload', {
      device_keys: identity,
      one_time_keys: { ...otk(alice, 'A1'), ...otk(alice, 'A2') },
      fallback_keys: { 'signed_curve25519:F1': { key: 'fallback', fallback: true } },
    })
    expect([upload.statusCode, upload.json()]).to.deep.equal([200, { one_time_key_counts: { signed_curve25519: 2 } }])
    const counted = await sync(alice)
    expect(counted.device_one_time_keys_count).to.deep.equal({ signed_curve25519: 2 })
    expect(counted.device_unused_fallback_key_types).to.deep.equal(['signed_curve25519'])

    const queried = (await post(bob, '/keys/query', { device_keys: { [alice.user_id]: [] } })).json<{ device_keys: Record<string, Record<string, Json>> }>()
    const { unsigned: _unsigned, ...published } = queried.device_keys[alice.user_id]![alice.device_id]!
    expect(published).to.deep.equal(identity)
    const onlyOther = (await post(bob, '/keys/query', { device_keys: { [alice.user_id]: ['NOSUCH'], '@x:elsewhere.test': [] } })).json<Json>()
    expect(onlyOther).to.deep.include({ device_keys: { [alice.user_id]: {} } })
    expect(onlyOther['failures']).to.have.property('elsewhere.test')

    const claim = async () =>
      (await post(bob, '/keys/claim', { one_time_keys: { [alice.user_id]: { [alice.device_id]: 'signed_curve25519' } } })).json<{ one_time_keys: Record<string, Record<string, Json>> }>()
        .one_time_keys[alice.user_id]?.[alice.device_id]
    const claimed = [await claim(), await claim(), await claim(), await claim()].map((k) => Object.keys(k ?? {})[0])
    expect(claimed).to.deep.equal(['signed_curve25519:A1', 'signed_curve25519:A2', 'signed_curve25519:F1', 'signed_curve25519:F1'])
    const after = await sync(alice)
    expect(after.device_one_time_keys_count).to.deep.equal({ signed_curve25519: 0 })
    expect(after.device_unused_fallback_key_types, 'the fallback key was used').to.deep.equal([])

    // A new fallback key is unused again; the same one uploaded again stays used.
    await post(alice, '/keys/upload', { fallback_keys: { 'signed_curve25519:F1': { key: 'fallback', fallback: true } } })
    expect((await sync(alice)).device_unused_fallback_key_types).to.deep.equal([])
    await post(alice, '/keys/upload', { fallback_keys: { 'signed_curve25519:F2': { key: 'fallback2', fallback: true } } })
    expect((await sync(alice)).device_unused_fallback_key_types).to.deep.equal(['signed_curve25519'])
  })

  it('should hand out each of many one-time keys to exactly one of as many concurrent claims, then none', async () => {
    const [carol, dave] = [await h.register('k_carol'), await h.register('k_dave')]
    const keys = Object.assign({}, ...Array.from({ length: 20 }, (_, i) => otk(carol, `C${String(i).padStart(2, '0')}`))) as Json
    await post(carol, '/keys/upload', { one_time_keys: keys })
    const claims = await Promise.all(
      Array.from({ length: 20 }, async () => {
        const res = await post(dave, '/keys/claim', { one_time_keys: { [carol.user_id]: { [carol.device_id]: 'signed_curve25519' } } })
        return Object.keys(res.json<{ one_time_keys: Record<string, Record<string, Json>> }>().one_time_keys[carol.user_id]?.[carol.device_id] ?? {})
      }),
    )
    const handedOut = claims.flat()
    expect(handedOut, 'every claim got a key').to.have.length(20)
    expect(new Set(handedOut).size, 'no key twice').to.equal(20)
    const none = await post(dave, '/keys/claim', { one_time_keys: { [carol.user_id]: { [carol.device_id]: 'signed_curve25519' } } })
    expect(none.json()).to.deep.equal({ one_time_keys: {}, failures: {} })
  })

  it('should refuse malformed or foreign uploads with a Matrix error and store nothing of them', async () => {
    const [erin, frank] = [await h.register('k_erin'), await h.register('k_frank')]
    const e1 = otk(erin, 'E1')
    await post(erin, '/keys/upload', { one_time_keys: e1 })
    const cases: [string, unknown, number, string][] = [
      ["another device's identity keys", { device_keys: deviceKeys(frank, keyPair(frank.device_id)) }, 400, 'M_INVALID_PARAM'],
      ['a one-time key ID reused for another key', { one_time_keys: { 'signed_curve25519:E1': { key: 'other' } } }, 400, 'M_INVALID_PARAM'],
      ['a key ID without an algorithm', { one_time_keys: { E2: { key: 'x' } } }, 400, 'M_INVALID_PARAM'],
      ['device keys missing fields', { device_keys: { user_id: erin.user_id } }, 400, 'M_BAD_JSON'],
    ]
    for (const [name, body, status, errcode] of cases) {
      const res = await post(erin, '/keys/upload', body)
      expect([name, res.statusCode, res.json().errcode]).to.deep.equal([name, status, errcode])
    }
    // The same key again is a retry, not a clash.
    expect((await post(erin, '/keys/upload', { one_time_keys: e1 })).json()).to.deep.equal({ one_time_key_counts: { signed_curve25519: 1 } })
    const stored = await h.t.db.selectFrom('e2e_device_keys').select('user_id').where('user_id', '=', erin.user_id).execute()
    expect(stored).to.deep.equal([])
    const badQuery = await post(erin, '/keys/query', { device_keys: { nobody: [] } })
    expect([badQuery.statusCode, badQuery.json().errcode]).to.deep.equal([400, 'M_INVALID_PARAM'])
    const badChanges = await h.call('GET', `${v3}/keys/changes?from=x&to=y`, { token: erin.access_token })
    expect([badChanges.statusCode, badChanges.json().errcode]).to.deep.equal([400, 'M_INVALID_PARAM'])
  })

  it('should tell room members of device changes, new members and members gone in /sync device_lists and /keys/changes', async () => {
    const [gina, hank, ivan] = [await h.register('k_gina'), await h.register('k_hank'), await h.register('k_ivan')]
    const roomId = await createSharedRoom(h, gina, hank)
    const start = await sync(hank)
    expect(start.device_lists, 'initial sync: none').to.deep.equal({ changed: [], left: [] })

    // A waiting sync wakes when gina publishes her device's keys.
    const started = Date.now()
    const woken = sync(hank, { since: start.next_batch, timeout: '10000' })
    await new Promise((resolve) => setTimeout(resolve, 300))
    await post(gina, '/keys/upload', { device_keys: deviceKeys(gina, keyPair(gina.device_id)) })
    const afterKeys = await woken
    expect(Date.now() - started).to.be.below(5_000)
    expect(afterKeys.device_lists).to.deep.equal({ changed: [gina.user_id], left: [] })
    expect((await sync(hank, { since: afterKeys.next_batch })).device_lists, 'shown once').to.deep.equal({ changed: [], left: [] })

    // Ivan's keys change while he shares no room with hank: not shown. Then he joins, then leaves.
    await post(ivan, '/keys/upload', { device_keys: deviceKeys(ivan, keyPair(ivan.device_id)) })
    const quiet = await sync(hank, { since: afterKeys.next_batch })
    expect(quiet.device_lists).to.deep.equal({ changed: [], left: [] })
    await sendEvents(h, roomId, membership(ivan.user_id, ivan.user_id, 'join'))
    const joined = await sync(hank, { since: quiet.next_batch })
    expect(joined.device_lists).to.deep.equal({ changed: [ivan.user_id], left: [] })
    await sendEvents(h, roomId, membership(ivan.user_id, ivan.user_id, 'leave'))
    const gone = await sync(hank, { since: joined.next_batch })
    expect(gone.device_lists).to.deep.equal({ changed: [], left: [ivan.user_id] })

    const changes = await h.call('GET', `${v3}/keys/changes?from=${enc(start.next_batch)}&to=${enc(gone.next_batch)}`, { token: hank.access_token })
    expect(changes.json()).to.deep.equal({ changed: [gina.user_id], left: [ivan.user_id] })

    // Hank joins a room of ivan's, then leaves it: ivan's devices matter to him, then no more.
    const ivansRoom = await createSharedRoom(h, ivan, hank)
    const hankJoined = await sync(hank, { since: gone.next_batch })
    expect(hankJoined.device_lists).to.deep.equal({ changed: [ivan.user_id], left: [] })
    await sendEvents(h, ivansRoom, membership(hank.user_id, hank.user_id, 'leave'))
    const hankLeft = await sync(hank, { since: hankJoined.next_batch })
    expect(hankLeft.device_lists).to.deep.equal({ changed: [], left: [ivan.user_id] })

    // Gina logs out: her device and its keys are gone, and hank is told.
    expect((await h.call('POST', `${v3}/logout`, { token: gina.access_token, body: {} })).statusCode).to.equal(200)
    const loggedOut = await sync(hank, { since: hankLeft.next_batch })
    expect(loggedOut.device_lists.changed).to.deep.equal([gina.user_id])
    const queried = (await post(hank, '/keys/query', { device_keys: { [gina.user_id]: [] } })).json<{ device_keys: Json }>()
    expect(queried.device_keys).to.deep.equal({ [gina.user_id]: {} })
  })

  it('should keep cross-signing keys and signatures: first upload without a password, a replacement with it, user-signing keys and their signatures for their owner only', async () => {
    const [jane, kyle, liam] = [await h.register('k_jane'), await h.register('k_kyle'), await h.register('k_liam')]
    const janeDevice = keyPair(jane.device_id)
    await post(jane, '/keys/upload', { device_keys: deviceKeys(jane, janeDevice) })
    const master = keyPair()
    const selfSigning = keyPair()
    const userSigning = keyPair()
    const keys = {
      master_key: crossSigningKey(jane.user_id, 'master', master),
      self_signing_key: crossSigningKey(jane.user_id, 'self_signing', selfSigning, master),
      user_signing_key: crossSigningKey(jane.user_id, 'user_signing', userSigning, master),
    }
    const unsignedSelf = await post(jane, '/keys/device_signing/upload', { ...keys, self_signing_key: crossSigningKey(jane.user_id, 'self_signing', selfSigning) })
    expect([unsignedSelf.statusCode, unsignedSelf.json().errcode]).to.deep.equal([400, 'M_INVALID_SIGNATURE'])
    expect((await post(jane, '/keys/device_signing/upload', keys)).statusCode, 'first upload: no password').to.equal(200)
    expect((await post(jane, '/keys/device_signing/upload', keys)).statusCode, 'the same keys again').to.equal(200)
    const otherMaster = keyPair()
    const replacement = { master_key: crossSigningKey(jane.user_id, 'master', otherMaster) }
    const asked = await post(jane, '/keys/device_signing/upload', replacement)
    expect([asked.statusCode, asked.json<{ flows: unknown }>().flows]).to.deep.equal([401, [{ stages: ['m.login.password'] }]])

    const query = async (as: Session) => (await post(as, '/keys/query', { device_keys: { [jane.user_id]: [] } })).json<Record<string, Record<string, Json>>>()
    const seenByKyle = await query(kyle)
    expect(seenByKyle['master_keys']![jane.user_id]).to.deep.equal(keys.master_key)
    expect(seenByKyle['self_signing_keys']![jane.user_id]).to.deep.equal(keys.self_signing_key)
    expect(seenByKyle['user_signing_keys']).to.deep.equal({})
    expect((await query(jane))['user_signing_keys']![jane.user_id]).to.deep.equal(keys.user_signing_key)

    // Jane signs her device with her self-signing key: everyone sees that signature.
    const { signatures: _s, ...bareDevice } = deviceKeys(jane, janeDevice)
    const signedDevice = signJson(bareDevice as JsonObject, jane.user_id, selfSigning)
    const signed = await post(jane, '/keys/signatures/upload', { [jane.user_id]: { [jane.device_id]: signedDevice } })
    expect(signed.json()).to.deep.equal({ failures: {} })
    const device = (await query(kyle))['device_keys']![jane.user_id]![jane.device_id] as { signatures: Record<string, Record<string, string>> }
    expect(device.signatures[jane.user_id]).to.have.keys(`ed25519:${jane.device_id}`, selfSigning.keyId)

    // Kyle signs jane's master key with his user-signing key: kyle sees it, liam does not.
    const kyleMaster = keyPair()
    const kyleUserSigning = keyPair()
    await post(kyle, '/keys/device_signing/upload', {
      master_key: crossSigningKey(kyle.user_id, 'master', kyleMaster),
      user_signing_key: crossSigningKey(kyle.user_id, 'user_signing', kyleUserSigning, kyleMaster),
    })
    const kyleSigns = signJson(keys.master_key as JsonObject, kyle.user_id, kyleUserSigning)
    expect((await post(kyle, '/keys/signatures/upload', { [jane.user_id]: { [master.publicKeyBase64]: kyleSigns } })).json()).to.deep.equal({ failures: {} })
    const signers = async (as: Session) => Object.keys(((await query(as))['master_keys']![jane.user_id] as { signatures?: Json }).signatures ?? {})
    expect(await signers(kyle)).to.include(kyle.user_id)
    expect(await signers(liam)).to.not.include(kyle.user_id)

    // A signature that does not verify, or on a key that is not the stored one, is refused.
    const forged = signJson(keys.master_key as JsonObject, kyle.user_id, keyPair(kyleUserSigning.publicKeyBase64))
    const changed = signJson({ ...(keys.master_key as JsonObject), usage: ['master', 'other'] }, kyle.user_id, kyleUserSigning)
    const refused = (await post(kyle, '/keys/signatures/upload', { [jane.user_id]: { [master.publicKeyBase64]: forged, NOSUCH: kyleSigns } })).json<{ failures: Json }>()
    expect(refused.failures).to.deep.equal({
      [jane.user_id]: {
        [master.publicKeyBase64]: { errcode: 'M_INVALID_SIGNATURE', error: 'No valid signature by a key of the signer that may sign this key' },
        NOSUCH: { errcode: 'M_NOT_FOUND', error: 'No such key' },
      },
    })
    const notStored = (await post(kyle, '/keys/signatures/upload', { [jane.user_id]: { [master.publicKeyBase64]: changed } })).json<{ failures: Record<string, Record<string, Json>> }>()
    expect(notStored.failures[jane.user_id]![master.publicKeyBase64]).to.include({ errcode: 'M_INVALID_PARAM' })

    // With the password, the master key is replaced.
    const auth = { type: 'm.login.password', identifier: { type: 'm.id.user', user: jane.user_id }, password: 'correct horse battery' }
    expect((await post(jane, '/keys/device_signing/upload', { ...replacement, auth })).statusCode).to.equal(200)
    expect((await query(kyle))['master_keys']![jane.user_id]).to.deep.equal(replacement.master_key)
  })
})
