import { sql, type Kysely, type Transaction } from 'kysely'
import { encodeCanonicalJson } from './events/canonical-json.js'
import type { JsonObject } from './events/redaction.js'
import { verifyJsonSignature } from './events/signing.js'
import { StorageError } from './errors.js'
import { lockOrderedStream } from './ordered-streams.js'
import type { Database } from './schema.js'
import { sharesRoomSql } from './shared-rooms.js'

/**
 * End-to-end encryption keys (client-server API "End-to-End Encryption"): devices publish their
 * identity keys, one-time keys and fallback keys; users publish cross-signing keys and
 * signatures; others query and claim them to encrypt. The server checks that each upload is the
 * uploader's own and that signatures verify, and hands keys out; it never holds a secret key.
 *
 * Device lists: every change of a user's devices or keys that others must re-query (identity
 * keys uploaded or changed, a device deleted, cross-signing keys or signatures) records a new
 * stream ID for the user in `device_lists_changes` (the `device_lists` ordered stream,
 * storage/ordered-streams.ts). /sync's `device_lists` and /keys/changes read it.
 *
 * Locking: a transaction that may record a change takes the stream lock first, before any row
 * lock, so it never waits for the lock while holding rows another holder of the lock wants.
 */

type Json = Record<string, unknown>
type Db = Kysely<Database> | Transaction<Database>

/**
 * Takes the device lists stream lock (call first in the transaction), then records a change of
 * `userId`'s devices or keys.
 *
 * @example
 * await db.transaction().execute(async (trx) => { await markDeviceListChanged(trx, '@a:hs') })
 */
export async function markDeviceListChanged(trx: Transaction<Database>, userId: string): Promise<void> {
  await lockOrderedStream(trx, 'device_lists')
  await sql`
    INSERT INTO device_lists_changes (user_id, stream_id) VALUES (${userId}, nextval('device_lists_stream_seq'))
    ON CONFLICT (user_id) DO UPDATE SET stream_id = excluded.stream_id`.execute(trx)
}

/** What /keys/upload carries (the route checked the shapes). */
export interface KeyUpload {
  readonly userId: string
  readonly deviceId: string
  readonly deviceKeys?: Json
  /** `<algorithm>:<key ID>` → key. */
  readonly oneTimeKeys?: Readonly<Record<string, unknown>>
  readonly fallbackKeys?: Readonly<Record<string, unknown>>
}

/**
 * Stores a device's keys: its identity keys (a change is a device list change), new one-time
 * keys (one already stored under the same ID must be the same key), and a fallback key per
 * algorithm (replacing the previous one; the same key keeps its `used` flag).
 *
 * @throws StorageError `ES_INVALID_PARAM` for identity keys of another user or device, a key ID
 *   without an algorithm, or a one-time key ID reused for another key.
 * @returns the device's one-time key counts by algorithm.
 * @example
 * await uploadKeys(db, { userId, deviceId, oneTimeKeys: { 'signed_curve25519:AAAAHg': { key: '…', signatures: {…} } } }) // { signed_curve25519: 1 }
 */
export async function uploadKeys(db: Kysely<Database>, upload: KeyUpload): Promise<Record<string, number>> {
  const { userId, deviceId, deviceKeys } = upload
  if (deviceKeys !== undefined && (deviceKeys['user_id'] !== userId || deviceKeys['device_id'] !== deviceId)) {
    throw new StorageError('ES_INVALID_PARAM', `device_keys must be those of ${userId}'s device ${deviceId}`)
  }
  const oneTimeKeys = keyRows(upload.oneTimeKeys)
  const fallbackKeys = keyRows(upload.fallbackKeys)
  return db.transaction().execute(async (trx) => {
    if (deviceKeys !== undefined) {
      await lockOrderedStream(trx, 'device_lists')
      const json = encodeCanonicalJson(deviceKeys)
      const stored = await trx.selectFrom('e2e_device_keys').select('key_json').where('user_id', '=', userId).where('device_id', '=', deviceId).executeTakeFirst()
      if (stored?.key_json !== json) {
        await trx
          .insertInto('e2e_device_keys')
          .values({ user_id: userId, device_id: deviceId, key_json: json })
          .onConflict((oc) => oc.columns(['user_id', 'device_id']).doUpdateSet({ key_json: json }))
          .execute()
        await markDeviceListChanged(trx, userId)
      }
    }
    if (oneTimeKeys.length > 0) {
      const inserted = await trx
        .insertInto('e2e_one_time_keys')
        .values(oneTimeKeys.map((k) => ({ user_id: userId, device_id: deviceId, ...k })))
        .onConflict((oc) => oc.doNothing())
        .returning(['algorithm', 'key_id'])
        .execute()
      if (inserted.length < oneTimeKeys.length) {
        const fresh = new Set(inserted.map((k) => `${k.algorithm}:${k.key_id}`))
        const repeated = oneTimeKeys.filter((k) => !fresh.has(`${k.algorithm}:${k.key_id}`))
        const stored = await trx
          .selectFrom('e2e_one_time_keys')
          .select(['algorithm', 'key_id', 'key_json'])
          .where('user_id', '=', userId)
          .where('device_id', '=', deviceId)
          .where(sql<boolean>`(algorithm, key_id) IN (${sql.join(repeated.map((k) => sql`(${k.algorithm}, ${k.key_id})`))})`)
          .execute()
        const storedJson = new Map(stored.map((k) => [`${k.algorithm}:${k.key_id}`, k.key_json]))
        // A key claimed meanwhile is gone from the table: uploading it again is a retry, not a clash.
        for (const k of repeated) {
          const json = storedJson.get(`${k.algorithm}:${k.key_id}`)
          if (json !== undefined && json !== k.key_json) {
            throw new StorageError('ES_INVALID_PARAM', `one-time key ${k.algorithm}:${k.key_id} already exists with another value`)
          }
        }
      }
    }
    for (const k of fallbackKeys) {
      await sql`
        INSERT INTO e2e_fallback_keys AS f (user_id, device_id, algorithm, key_id, key_json, used)
        VALUES (${userId}, ${deviceId}, ${k.algorithm}, ${k.key_id}, ${k.key_json}, false)
        ON CONFLICT (user_id, device_id, algorithm) DO UPDATE
          SET key_id = excluded.key_id, key_json = excluded.key_json,
              used = f.used AND f.key_id = excluded.key_id AND f.key_json = excluded.key_json`.execute(trx)
    }
    return (await deviceKeyCounts(trx, userId, deviceId)).oneTimeKeyCounts
  })
}

/** `<algorithm>:<key ID>` → key as rows; `ES_INVALID_PARAM` for an ID without an algorithm. */
function keyRows(keys: Readonly<Record<string, unknown>> | undefined): { algorithm: string; key_id: string; key_json: string }[] {
  return Object.entries(keys ?? {}).map(([id, key]) => {
    const colon = id.indexOf(':')
    if (colon <= 0 || colon === id.length - 1) throw new StorageError('ES_INVALID_PARAM', `key ID ${JSON.stringify(id.slice(0, 100))} must look like <algorithm>:<key ID>`)
    return { algorithm: id.slice(0, colon), key_id: id.slice(colon + 1), key_json: encodeCanonicalJson(key) }
  })
}

/**
 * One-time key counts as clients are answered them (`/keys/upload`, `/sync`, sliding sync's
 * `e2ee`): `signed_curve25519` is always counted, 0 when there are none, as Synapse does, so
 * that clients know to upload some.
 *
 * @example
 * clientKeyCounts({}) // { signed_curve25519: 0 }
 */
export function clientKeyCounts(counts: Readonly<Record<string, number>>): Record<string, number> {
  return { signed_curve25519: 0, ...counts }
}

/**
 * A device's one-time key counts by algorithm, and the algorithms of its unused fallback keys
 * (for /sync and /keys/upload), in one statement.
 *
 * @example
 * await deviceKeyCounts(db, '@a:hs', 'DEV') // { oneTimeKeyCounts: { signed_curve25519: 49 }, unusedFallbackKeyTypes: ['signed_curve25519'] }
 */
export async function deviceKeyCounts(db: Db, userId: string, deviceId: string): Promise<{ oneTimeKeyCounts: Record<string, number>; unusedFallbackKeyTypes: string[] }> {
  const { rows } = await sql<{ kind: 'otk' | 'fallback'; algorithm: string; n: string }>`
    SELECT 'otk' AS kind, algorithm, count(*) AS n FROM e2e_one_time_keys WHERE user_id = ${userId} AND device_id = ${deviceId} GROUP BY algorithm
    UNION ALL
    SELECT 'fallback', algorithm, 1 FROM e2e_fallback_keys WHERE user_id = ${userId} AND device_id = ${deviceId} AND NOT used`.execute(db)
  const oneTimeKeyCounts: Record<string, number> = {}
  const unusedFallbackKeyTypes: string[] = []
  for (const row of rows) {
    if (row.kind === 'otk') oneTimeKeyCounts[row.algorithm] = Number(row.n)
    else unusedFallbackKeyTypes.push(row.algorithm)
  }
  return { oneTimeKeyCounts, unusedFallbackKeyTypes: unusedFallbackKeyTypes.sort() }
}

/** The answer of /keys/query (the caller adds `failures`). */
export interface QueriedKeys {
  device_keys: Record<string, Record<string, Json>>
  master_keys: Record<string, Json>
  self_signing_keys: Record<string, Json>
  user_signing_keys: Record<string, Json>
}

/**
 * The identity keys of `users`' devices (every device for an empty list), with their display
 * names in `unsigned`, and their cross-signing keys, as `requester` may see them: signatures by
 * the key owner, and by the requester, are merged in; user-signing keys only for the requester
 * themselves.
 *
 * @example
 * await queryKeys(db, '@a:hs', { '@b:hs': [] }) // { device_keys: { '@b:hs': { DEV: {…} } }, master_keys: {…}, … }
 */
export async function queryKeys(db: Kysely<Database>, requester: string, users: Readonly<Record<string, readonly string[]>>): Promise<QueriedKeys> {
  const userIds = Object.keys(users)
  const answer: QueriedKeys = { device_keys: {}, master_keys: {}, self_signing_keys: {}, user_signing_keys: {} }
  if (userIds.length === 0) return answer
  const [devices, crossSigning, signatures] = await Promise.all([
    db
      .selectFrom('e2e_device_keys as k')
      .leftJoin('devices as d', (join) => join.onRef('d.user_id', '=', 'k.user_id').onRef('d.device_id', '=', 'k.device_id'))
      .select(['k.user_id', 'k.device_id', 'k.key_json', 'd.display_name'])
      .where('k.user_id', 'in', userIds)
      .execute(),
    db.selectFrom('e2e_cross_signing_keys').select(['user_id', 'key_type', 'public_key', 'key_json']).where('user_id', 'in', userIds).execute(),
    db
      .selectFrom('e2e_signatures')
      .selectAll()
      .where('target_user_id', 'in', userIds)
      .where((eb) => eb.or([eb('signer_user_id', '=', eb.ref('target_user_id')), eb('signer_user_id', '=', requester)]))
      .execute(),
  ])
  const extraSignatures = new Map<string, typeof signatures>()
  for (const s of signatures) {
    const key = `${s.target_user_id} ${s.target_key_id}`
    extraSignatures.set(key, [...(extraSignatures.get(key) ?? []), s])
  }
  const withSignatures = (json: string, userId: string, keyId: string): Json => {
    const key = JSON.parse(json) as Json
    const extra = extraSignatures.get(`${userId} ${keyId}`)
    if (extra === undefined) return key
    const all = { ...((key['signatures'] ?? {}) as Record<string, Record<string, string>>) }
    for (const s of extra) all[s.signer_user_id] = { ...all[s.signer_user_id], [s.signer_key_id]: s.signature }
    return { ...key, signatures: all }
  }
  for (const userId of userIds) answer.device_keys[userId] = {}
  for (const d of devices) {
    const wanted = users[d.user_id] ?? []
    if (wanted.length > 0 && !wanted.includes(d.device_id)) continue
    const key = withSignatures(d.key_json, d.user_id, d.device_id)
    const unsigned = { ...((key['unsigned'] ?? {}) as Json), ...(d.display_name !== null && { device_display_name: d.display_name }) }
    answer.device_keys[d.user_id]![d.device_id] = Object.keys(unsigned).length > 0 ? { ...key, unsigned } : key
  }
  for (const k of crossSigning) {
    if (k.key_type === 'user_signing' && k.user_id !== requester) continue
    answer[`${k.key_type}_keys`][k.user_id] = withSignatures(k.key_json, k.user_id, k.public_key)
  }
  return answer
}

/** One key to claim: a device's one-time key of an algorithm. */
export interface KeyClaim {
  readonly userId: string
  readonly deviceId: string
  readonly algorithm: string
}

/**
 * Hands out one one-time key per claim, each at most once (deleted as it is claimed; concurrent
 * claims take different keys); a device with none left gives its fallback key (marked used,
 * kept). Devices with neither are left out.
 *
 * @example
 * await claimKeys(db, [{ userId: '@b:hs', deviceId: 'DEV', algorithm: 'signed_curve25519' }])
 * // { '@b:hs': { DEV: { 'signed_curve25519:AAAAHg': { key: '…', signatures: {…} } } } }
 */
export async function claimKeys(db: Kysely<Database>, claims: readonly KeyClaim[]): Promise<Record<string, Record<string, Record<string, unknown>>>> {
  const answer: Record<string, Record<string, Record<string, unknown>>> = {}
  for (const { userId, deviceId, algorithm } of claims) {
    const { rows } = await sql<{ key_id: string; key_json: string }>`
      WITH one AS (
        SELECT user_id, device_id, algorithm, key_id FROM e2e_one_time_keys
        WHERE user_id = ${userId} AND device_id = ${deviceId} AND algorithm = ${algorithm}
        ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED
      )
      DELETE FROM e2e_one_time_keys k USING one
      WHERE k.user_id = one.user_id AND k.device_id = one.device_id AND k.algorithm = one.algorithm AND k.key_id = one.key_id
      RETURNING k.key_id, k.key_json`.execute(db)
    const claimed =
      rows[0] ??
      (await db
        .updateTable('e2e_fallback_keys')
        .set({ used: true })
        .where('user_id', '=', userId)
        .where('device_id', '=', deviceId)
        .where('algorithm', '=', algorithm)
        .returning(['key_id', 'key_json'])
        .executeTakeFirst())
    if (claimed === undefined) continue
    answer[userId] ??= {}
    answer[userId][deviceId] = { [`${algorithm}:${claimed.key_id}`]: JSON.parse(claimed.key_json) as unknown }
  }
  return answer
}

export const crossSigningKeyTypes = ['master', 'self_signing', 'user_signing'] as const
export type CrossSigningKeyType = (typeof crossSigningKeyTypes)[number]

/**
 * Whether an upload of cross-signing keys would change the user's stored ones (a first upload,
 * or the same keys again, needs no user-interactive auth: MSC3967, as Synapse).
 *
 * @example
 * await crossSigningKeysChange(db, '@a:hs', { master: {…} }) // false: the same master key is stored
 */
export async function crossSigningKeysChange(db: Kysely<Database>, userId: string, keys: Partial<Record<CrossSigningKeyType, Json>>): Promise<'first' | 'same' | 'replace'> {
  const stored = await db.selectFrom('e2e_cross_signing_keys').select(['key_type', 'key_json']).where('user_id', '=', userId).execute()
  if (stored.length === 0) return 'first'
  const byType = new Map(stored.map((k) => [k.key_type, k.key_json]))
  return crossSigningKeyTypes.every((type) => keys[type] === undefined || byType.get(type) === encodeCanonicalJson(keys[type])) ? 'same' : 'replace'
}

/**
 * Stores `userId`'s cross-signing keys (any of master, self-signing, user-signing). Each must be
 * the user's, for its usage, with one ed25519 key; the self-signing and user-signing keys must
 * be signed by the master key (the one uploaded with them, or the stored one).
 *
 * @throws StorageError `ES_INVALID_PARAM` for a malformed key or no master key;
 *   `ES_INVALID_SIGNATURE` for a key the master key did not sign.
 * @example
 * await uploadCrossSigningKeys(db, '@a:hs', { master, self_signing, user_signing })
 */
export async function uploadCrossSigningKeys(db: Kysely<Database>, userId: string, keys: Partial<Record<CrossSigningKeyType, Json>>): Promise<void> {
  const given = crossSigningKeyTypes.filter((type) => keys[type] !== undefined)
  if (given.length === 0) return
  const publicKeys = new Map(given.map((type) => [type, crossSigningPublicKey(userId, type, keys[type]!)]))
  await db.transaction().execute(async (trx) => {
    await lockOrderedStream(trx, 'device_lists')
    let master = publicKeys.get('master')
    if (master === undefined) {
      const stored = await trx.selectFrom('e2e_cross_signing_keys').select('public_key').where('user_id', '=', userId).where('key_type', '=', 'master').executeTakeFirst()
      if (stored === undefined) throw new StorageError('ES_INVALID_PARAM', 'No master key: upload one first, or with these')
      master = stored.public_key
    }
    for (const type of given) {
      if (type !== 'master' && !verifyJsonSignature(keys[type] as JsonObject, userId, `ed25519:${master}`, master)) {
        throw new StorageError('ES_INVALID_SIGNATURE', `The ${type} key is not signed by the master key`)
      }
      const json = encodeCanonicalJson(keys[type])
      const publicKey = publicKeys.get(type)!
      await trx
        .insertInto('e2e_cross_signing_keys')
        .values({ user_id: userId, key_type: type, public_key: publicKey, key_json: json })
        .onConflict((oc) => oc.columns(['user_id', 'key_type']).doUpdateSet({ public_key: publicKey, key_json: json }))
        .execute()
    }
    await markDeviceListChanged(trx, userId)
  })
}

/** The ed25519 public key of a cross-signing key object; `ES_INVALID_PARAM` when malformed. */
function crossSigningPublicKey(userId: string, type: CrossSigningKeyType, key: Json): string {
  const usage = key['usage']
  const entries = Object.entries((key['keys'] ?? {}) as Record<string, unknown>)
  const [id, value] = entries[0] ?? []
  if (key['user_id'] !== userId || !Array.isArray(usage) || !usage.includes(type) || entries.length !== 1 || typeof value !== 'string' || id !== `ed25519:${value}`) {
    throw new StorageError('ES_INVALID_PARAM', `The ${type} key must be ${userId}'s, with usage ${type} and one key "ed25519:<public key>": "<public key>"`)
  }
  return value
}

/** Why one signed key of /keys/signatures/upload was not taken. */
export interface SignatureFailure {
  readonly errcode: string
  readonly error: string
}

/**
 * Stores the signatures `signer` made on keys (/keys/signatures/upload: user ID → key ID → the
 * signed key object): on their own devices with their self-signing key, on their own master key
 * with one of their devices, on another user's master key with their user-signing key. The
 * object must be the stored key, and each signature must verify; signatures by other keys are
 * ignored. Each key with a new signature is a device list change of its owner.
 *
 * @returns the keys not taken, by user and key ID.
 * @example
 * await uploadSignatures(db, '@a:hs', { '@a:hs': { DEV: signedDeviceKeys } }) // {}
 */
export async function uploadSignatures(
  db: Kysely<Database>,
  signer: string,
  signed: Readonly<Record<string, Readonly<Record<string, Json>>>>,
): Promise<Record<string, Record<string, SignatureFailure>>> {
  const failures: Record<string, Record<string, SignatureFailure>> = {}
  const fail = (userId: string, keyId: string, errcode: string, error: string) => {
    failures[userId] = { ...failures[userId], [keyId]: { errcode, error } }
  }
  const signerKeys = await db.selectFrom('e2e_cross_signing_keys').select(['key_type', 'public_key']).where('user_id', '=', signer).execute()
  const signerKey = (type: CrossSigningKeyType) => signerKeys.find((k) => k.key_type === type)?.public_key
  for (const [userId, keys] of Object.entries(signed)) {
    for (const [keyId, object] of Object.entries(keys)) {
      const target = await signatureTarget(db, userId, keyId)
      if (target === undefined) {
        fail(userId, keyId, 'M_NOT_FOUND', 'No such key')
        continue
      }
      if (!sameKey(target.json, object)) {
        fail(userId, keyId, 'M_INVALID_PARAM', 'The signed object is not the stored key')
        continue
      }
      // The keys of the signer's that may sign this target.
      let signingKeys: { keyId: string; publicKey: string }[]
      if (userId !== signer) {
        const userSigning = signerKey('user_signing')
        signingKeys = target.kind === 'master' && userSigning ? [{ keyId: `ed25519:${userSigning}`, publicKey: userSigning }] : []
      } else if (target.kind === 'device') {
        const selfSigning = signerKey('self_signing')
        signingKeys = selfSigning ? [{ keyId: `ed25519:${selfSigning}`, publicKey: selfSigning }] : []
      } else if (target.kind === 'master') {
        signingKeys = await deviceSigningKeys(db, signer)
      } else signingKeys = []
      const given = ((object['signatures'] ?? {}) as Record<string, Record<string, unknown>>)[signer] ?? {}
      const valid = signingKeys.filter((k) => typeof given[k.keyId] === 'string' && verifyJsonSignature(object as JsonObject, signer, k.keyId, k.publicKey))
      if (valid.length === 0) {
        fail(userId, keyId, 'M_INVALID_SIGNATURE', 'No valid signature by a key of the signer that may sign this key')
        continue
      }
      await db.transaction().execute(async (trx) => {
        await lockOrderedStream(trx, 'device_lists')
        for (const k of valid) {
          const signature = given[k.keyId] as string
          await trx
            .insertInto('e2e_signatures')
            .values({ target_user_id: userId, target_key_id: keyId, signer_user_id: signer, signer_key_id: k.keyId, signature })
            .onConflict((oc) => oc.columns(['target_user_id', 'target_key_id', 'signer_user_id', 'signer_key_id']).doUpdateSet({ signature }))
            .execute()
        }
        await markDeviceListChanged(trx, userId)
      })
    }
  }
  return failures
}

/** The stored key a signature upload names: a device's identity keys, or a cross-signing key by its public key. */
async function signatureTarget(db: Kysely<Database>, userId: string, keyId: string): Promise<{ kind: 'device' | CrossSigningKeyType; json: Json } | undefined> {
  const device = await db.selectFrom('e2e_device_keys').select('key_json').where('user_id', '=', userId).where('device_id', '=', keyId).executeTakeFirst()
  if (device) return { kind: 'device', json: JSON.parse(device.key_json) as Json }
  const crossSigning = await db.selectFrom('e2e_cross_signing_keys').select(['key_type', 'key_json']).where('user_id', '=', userId).where('public_key', '=', keyId).executeTakeFirst()
  return crossSigning && { kind: crossSigning.key_type, json: JSON.parse(crossSigning.key_json) as Json }
}

/** The ed25519 keys of `userId`'s devices, as `ed25519:<device ID>`. */
async function deviceSigningKeys(db: Kysely<Database>, userId: string): Promise<{ keyId: string; publicKey: string }[]> {
  const rows = await db.selectFrom('e2e_device_keys').select(['device_id', 'key_json']).where('user_id', '=', userId).execute()
  return rows.flatMap((row) => {
    const keyId = `ed25519:${row.device_id}`
    const publicKey = ((JSON.parse(row.key_json) as Json)['keys'] as Record<string, unknown> | undefined)?.[keyId]
    return typeof publicKey === 'string' ? [{ keyId, publicKey }] : []
  })
}

/** Whether two key objects are the same key (signatures and `unsigned` aside). */
function sameKey(a: Json, b: Json): boolean {
  const bare = ({ signatures: _s, unsigned: _u, ...rest }: Json) => encodeCanonicalJson(rest)
  try {
    return bare(a) === bare(b)
  } catch {
    return false
  }
}

/**
 * Deletes the keys of `userId`'s devices `deviceIds` (`all`: every device; `except` keeps one)
 * and records the device list change, in the caller's transaction (storage/accounts.ts
 * `deleteDevices`, which takes the stream lock first through `markDeviceListChanged`).
 */
export async function deleteDeviceKeys(trx: Transaction<Database>, userId: string, deviceIds: readonly string[] | 'all', except?: string): Promise<void> {
  for (const table of ['e2e_device_keys', 'e2e_one_time_keys', 'e2e_fallback_keys'] as const) {
    let rows = trx.deleteFrom(table).where('user_id', '=', userId)
    if (deviceIds !== 'all') rows = rows.where('device_id', 'in', deviceIds)
    if (except !== undefined) rows = rows.where('device_id', '!=', except)
    await rows.execute()
  }
  let signatures = trx.deleteFrom('e2e_signatures').where('target_user_id', '=', userId)
  if (deviceIds !== 'all') signatures = signatures.where('target_key_id', 'in', deviceIds)
  else signatures = signatures.where('target_key_id', 'not in', trx.selectFrom('e2e_cross_signing_keys').select('public_key').where('user_id', '=', userId))
  if (except !== undefined) signatures = signatures.where('target_key_id', '!=', except)
  await signatures.execute()
}

/** Users whose devices changed (`changed`) and who no longer share a room (`left`). */
export interface DeviceListUpdates {
  readonly changed: string[]
  readonly left: string[]
}

/**
 * The device list updates `userId` must see between two positions (/sync `device_lists`,
 * /keys/changes):
 * - `changed`: users sharing a joined room with them (or themselves) whose devices or keys
 *   changed in `(keysAfter, keysUpTo]`; users who joined one of `rooms` after `roomsSince` and
 *   share a room with them; the members of rooms they joined after `roomsSince`;
 * - `left`: users who left or were banned from one of `rooms`, and the members of rooms they
 *   left, after `roomsSince`, who share no joined room with them any more.
 * A user may be reported changed without need (events between a vector token's minimum and
 * its writers' positions count as new), never missed.
 *
 * Cost: nothing read when no key changed and `rooms` is empty; else one statement (the new
 * membership events of `rooms`, the user's own memberships since, current memberships).
 *
 * @example
 * await deviceListUpdates(db, '@a:hs', { keysAfter: 3n, keysUpTo: 7n, roomsSince: 120n, rooms: ['!r:hs'] })
 * // { changed: ['@b:hs', '@c:hs'], left: ['@d:hs'] }
 */
export async function deviceListUpdates(
  db: Kysely<Database>,
  userId: string,
  range: { keysAfter: bigint; keysUpTo: bigint; roomsSince: bigint; rooms: readonly string[] },
): Promise<DeviceListUpdates> {
  const keysMoved = range.keysAfter < range.keysUpTo
  if (!keysMoved && range.rooms.length === 0) return { changed: [], left: [] }
  const since = range.roomsSince
  const { rows } = await sql<{ user_id: string; keys_changed: boolean; joined: boolean; departed: boolean; shares: boolean }>`
    WITH mine AS (
      SELECT room_id, membership FROM room_memberships WHERE user_id = ${userId} AND stream_ordering > ${since}::int8
    ), candidates AS (
      SELECT user_id, 'keys' AS why FROM device_lists_changes
      WHERE ${keysMoved}::boolean AND stream_id > ${range.keysAfter}::int8 AND stream_id <= ${range.keysUpTo}::int8
      UNION ALL
      SELECT state_key, CASE WHEN membership = 'join' THEN 'joined' ELSE 'departed' END FROM events
      WHERE room_id = ANY(${range.rooms}::text[]) AND type = 'm.room.member' AND stream_ordering > ${since}::int8 AND membership IN ('join', 'leave', 'ban')
      UNION ALL
      SELECT m.state_key, CASE WHEN mine.membership = 'join' THEN 'joined' ELSE 'departed' END
      FROM (SELECT DISTINCT room_id, membership FROM mine WHERE membership IN ('join', 'leave', 'ban')) mine
      JOIN current_state_events m ON m.room_id = mine.room_id AND m.type = 'm.room.member' AND m.membership = 'join'
    )
    SELECT user_id, bool_or(why = 'keys') AS keys_changed, bool_or(why = 'joined') AS joined, bool_or(why = 'departed') AS departed,
           (user_id = ${userId} OR ${sharesRoomSql(sql`user_id`, userId)}) AS shares
    FROM candidates GROUP BY user_id`.execute(db)
  const changed: string[] = []
  const left: string[] = []
  for (const row of rows) {
    if (row.shares && (row.keys_changed || (row.joined && row.user_id !== userId))) changed.push(row.user_id)
    else if (!row.shares && row.departed) left.push(row.user_id)
  }
  return { changed: changed.sort(), left: left.sort() }
}
