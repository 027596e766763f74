import { randomInt } from 'node:crypto'
import { sql, type Kysely } from 'kysely'
import { generateAccessToken, hashAccessToken } from './access-token.js'
import { deleteDeviceKeys, markDeviceListChanged } from './e2e-keys.js'
import { lockOrderedStream } from './ordered-streams.js'
import type { Database } from './schema.js'

/**
 * Users, devices and access tokens (tables of migrations/0003-accounts.sql).
 *
 * Invariants:
 * - every access token belongs to a device row of the same user (tokens are created together
 *   with or after their device, and deleting a device deletes its tokens in the same transaction);
 * - only SHA-256 hashes of tokens are stored (storage/access-token.ts);
 * - user IDs are stored exactly as registered (the API only registers lowercase localparts).
 *
 * Every function takes a `Kysely<Database>`, which may be a transaction.
 */

export interface UserRow {
  readonly userId: string
  /** `scrypt$…` (storage/password-hash.ts), or null when the user cannot log in with a password. */
  readonly passwordHash: string | null
  readonly deactivated: boolean
  /** A server admin (reads content reports, routes/reports.ts). */
  readonly admin: boolean
}

export interface Device {
  readonly deviceId: string
  readonly displayName: string | null
  readonly lastSeenTs: number | null
}

/** Who an access token authenticates. `tokenId` is `access_tokens.id`. */
export interface Requester {
  readonly userId: string
  readonly deviceId: string
  readonly tokenId: bigint
  /** An admin shadow-banned the user: their sends, invites and typing are answered and dropped. */
  readonly shadowBanned: boolean
}

/**
 * The localpart of `@localpart:server` (everything between `@` and the first `:`).
 *
 * @example
 * localpartOf('@alice:example.org') // 'alice'
 */
export function localpartOf(userId: string): string {
  const colon = userId.indexOf(':')
  return userId.slice(1, colon === -1 ? undefined : colon)
}

/**
 * A new device ID: 10 uppercase letters, as Synapse makes them.
 *
 * @example
 * generateDeviceId() // 'QWERTYUIOP'
 */
export function generateDeviceId(): string {
  let out = ''
  for (let i = 0; i < 10; i++) out += String.fromCharCode(65 + randomInt(26))
  return out
}

/**
 * Inserts a user; `'exists'` when the user ID is taken (an expected outcome, not an error).
 *
 * @example
 * await createUser(db, { userId: '@alice:example.org', passwordHash, nowMs: Date.now() }) // 'created'
 */
export async function createUser(
  db: Kysely<Database>,
  user: { userId: string; passwordHash: string | null; nowMs: number; admin?: boolean },
): Promise<'created' | 'exists'> {
  const inserted = await db
    .insertInto('users')
    .values({ user_id: user.userId, password_hash: user.passwordHash, created_ts: user.nowMs, admin: user.admin ?? false })
    .onConflict((oc) => oc.column('user_id').doNothing())
    .returning('user_id')
    .executeTakeFirst()
  return inserted ? 'created' : 'exists'
}

/**
 * @example
 * const user = await getUser(db, '@alice:example.org') // { userId, passwordHash, deactivated } | undefined
 */
export async function getUser(db: Kysely<Database>, userId: string): Promise<UserRow | undefined> {
  const row = await db
    .selectFrom('users')
    .select(['user_id', 'password_hash', 'deactivated', 'admin'])
    .where('user_id', '=', userId)
    .executeTakeFirst()
  return row && { userId: row.user_id, passwordHash: row.password_hash, deactivated: row.deactivated, admin: row.admin }
}

/**
 * @example
 * await setPasswordHash(db, '@alice:example.org', await hashPassword('new'))
 */
export async function setPasswordHash(db: Kysely<Database>, userId: string, passwordHash: string): Promise<void> {
  await db.updateTable('users').set({ password_hash: passwordHash }).where('user_id', '=', userId).execute()
}

/**
 * Creates the device, or keeps an existing one of that ID (its display name is only set when
 * given and the device is new, as at login).
 *
 * @example
 * await ensureDevice(db, { userId, deviceId: 'ABCDEFGHIJ', displayName: 'laptop', nowMs: Date.now() })
 */
export async function ensureDevice(
  db: Kysely<Database>,
  device: { userId: string; deviceId: string; displayName: string | null; nowMs: number },
): Promise<void> {
  await db
    .insertInto('devices')
    .values({ user_id: device.userId, device_id: device.deviceId, display_name: device.displayName, created_ts: device.nowMs, last_seen_ts: device.nowMs })
    .onConflict((oc) => oc.columns(['user_id', 'device_id']).doUpdateSet({ last_seen_ts: device.nowMs }))
    .execute()
}

/**
 * A user's devices, ordered by device ID.
 *
 * @example
 * const devices = await listDevices(db, '@alice:example.org')
 */
export async function listDevices(db: Kysely<Database>, userId: string): Promise<Device[]> {
  const rows = await db
    .selectFrom('devices')
    .select(['device_id', 'display_name', 'last_seen_ts'])
    .where('user_id', '=', userId)
    .orderBy('device_id')
    .execute()
  return rows.map(toDevice)
}

/**
 * @example
 * const device = await getDevice(db, '@alice:example.org', 'ABCDEFGHIJ') // Device | undefined
 */
export async function getDevice(db: Kysely<Database>, userId: string, deviceId: string): Promise<Device | undefined> {
  const row = await db
    .selectFrom('devices')
    .select(['device_id', 'display_name', 'last_seen_ts'])
    .where('user_id', '=', userId)
    .where('device_id', '=', deviceId)
    .executeTakeFirst()
  return row && toDevice(row)
}

function toDevice(row: { device_id: string; display_name: string | null; last_seen_ts: bigint | null }): Device {
  return { deviceId: row.device_id, displayName: row.display_name, lastSeenTs: row.last_seen_ts === null ? null : Number(row.last_seen_ts) }
}

/**
 * Sets a device's display name; false when the device does not exist.
 *
 * @example
 * await setDeviceDisplayName(db, userId, 'ABCDEFGHIJ', 'phone') // true
 */
export async function setDeviceDisplayName(db: Kysely<Database>, userId: string, deviceId: string, displayName: string | null): Promise<boolean> {
  const result = await db
    .updateTable('devices')
    .set({ display_name: displayName })
    .where('user_id', '=', userId)
    .where('device_id', '=', deviceId)
    .executeTakeFirst()
  return result.numUpdatedRows > 0n
}

/**
 * Deletes devices with their access tokens, pending to-device messages and end-to-end keys, in
 * one transaction; a deleted device is a change of the user's device list.
 * `deviceIds: 'all'` deletes every device of the user; `except` keeps one (the caller's own).
 * Returns the IDs of the deleted devices.
 *
 * @example
 * await deleteDevices(db, userId, ['ABCDEFGHIJ'])
 * await deleteDevices(db, userId, 'all', { except: requester.deviceId })
 */
export async function deleteDevices(
  db: Kysely<Database>,
  userId: string,
  deviceIds: readonly string[] | 'all',
  options: { except?: string } = {},
): Promise<string[]> {
  if (deviceIds !== 'all' && deviceIds.length === 0) return []
  return db.transaction().execute(async (trx) => {
    // The device lists lock first (storage/e2e-keys.ts), before any row lock.
    await lockOrderedStream(trx, 'device_lists')
    let query = trx.deleteFrom('devices').where('user_id', '=', userId)
    if (deviceIds !== 'all') query = query.where('device_id', 'in', deviceIds)
    if (options.except !== undefined) query = query.where('device_id', '!=', options.except)
    const deleted = (await query.returning('device_id').execute()).map((r) => r.device_id)
    // Tokens and inbox rows go by the requested devices, not only the deleted rows: a token
    // whose device row is missing is revoked all the same.
    for (const table of ['access_tokens', 'device_inbox'] as const) {
      let rows = trx.deleteFrom(table).where('user_id', '=', userId)
      if (deviceIds !== 'all') rows = rows.where('device_id', 'in', deviceIds)
      if (options.except !== undefined) rows = rows.where('device_id', '!=', options.except)
      await rows.execute()
    }
    await deleteDeviceKeys(trx, userId, deviceIds, options.except)
    if (deleted.length > 0) await markDeviceListChanged(trx, userId)
    return deleted
  })
}

/**
 * Deactivates an account for good: the user can no longer log in (no password, `deactivated`),
 * and every device goes with its access tokens (the revocation triggers of migration 0007 tell
 * every process's token cache). With `erase`, the profile's display name and avatar go too.
 * The user ID stays taken. Returns the IDs of the deleted devices.
 *
 * @example
 * await deactivateUser(db, '@alice:example.org', { erase: false }) // ['ABCDEFGHIJ']
 */
export async function deactivateUser(db: Kysely<Database>, userId: string, options: { erase: boolean }): Promise<string[]> {
  // Deactivated first: from that commit on no token of the user is accepted (findAccessToken).
  await db.transaction().execute(async (trx) => {
    await trx.updateTable('users').set({ deactivated: true, password_hash: null }).where('user_id', '=', userId).execute()
    if (options.erase) await trx.updateTable('profiles').set({ displayname: null, avatar_url: null }).where('user_id', '=', userId).execute()
  })
  return deleteDevices(db, userId, 'all')
}

/**
 * Creates an access token for an existing device; returns the token (shown to the client once,
 * never stored) and its row ID.
 *
 * @example
 * const { token } = await createAccessToken(db, { userId, deviceId, nowMs: Date.now() })
 */
export async function createAccessToken(
  db: Kysely<Database>,
  owner: { userId: string; deviceId: string; nowMs: number },
): Promise<{ token: string; tokenId: bigint }> {
  const token = generateAccessToken(localpartOf(owner.userId))
  const row = await db
    .insertInto('access_tokens')
    .values({ token_hash: hashAccessToken(token), user_id: owner.userId, device_id: owner.deviceId, created_ts: owner.nowMs })
    .returning('id')
    .executeTakeFirstOrThrow()
  return { token, tokenId: row.id }
}

/**
 * The requester a token hash belongs to; undefined for unknown tokens and deactivated users.
 *
 * @example
 * const requester = await findAccessToken(db, hashAccessToken(token))
 */
export async function findAccessToken(db: Kysely<Database>, tokenHash: Buffer): Promise<Requester | undefined> {
  const row = await db
    .selectFrom('access_tokens')
    .innerJoin('users', 'users.user_id', 'access_tokens.user_id')
    .select(['access_tokens.id', 'access_tokens.user_id', 'access_tokens.device_id', 'users.shadow_banned'])
    .where('access_tokens.token_hash', '=', tokenHash)
    .where('users.deactivated', '=', false)
    .executeTakeFirst()
  return row && { userId: row.user_id, deviceId: row.device_id, tokenId: row.id, shadowBanned: row.shadow_banned }
}

/** Shadow-bans the user or lifts it; false when there is no such user. */
export async function setShadowBanned(db: Kysely<Database>, userId: string, banned: boolean): Promise<boolean> {
  const result = await db.updateTable('users').set({ shadow_banned: banned }).where('user_id', '=', userId).executeTakeFirst()
  return result.numUpdatedRows > 0n
}

/**
 * IDs of the access tokens revoked (deleted, or their user deactivated) in the last `withinMs`
 * by the database's clock; triggers log them (migration 0007), whatever deleted them.
 *
 * @example
 * for (const id of await recentlyRevokedTokenIds(db, 5000)) cache.forget(id)
 */
export async function recentlyRevokedTokenIds(db: Kysely<Database>, withinMs: number): Promise<bigint[]> {
  const rows = await db
    .selectFrom('access_token_revocations')
    .select('token_id')
    .where('revoked_ts', '>', sql<bigint>`myelin_now_ms() - ${withinMs}::int8`)
    .execute()
  return rows.map((row) => BigInt(row.token_id))
}

/**
 * Deletes the tokens of one device (a re-login with the same device ID invalidates the old ones).
 *
 * @example
 * await deleteDeviceTokens(db, userId, 'ABCDEFGHIJ')
 */
export async function deleteDeviceTokens(db: Kysely<Database>, userId: string, deviceId: string): Promise<void> {
  await db.deleteFrom('access_tokens').where('user_id', '=', userId).where('device_id', '=', deviceId).execute()
}

/**
 * Changes what a server admin may change of an account: the admin flag, and reactivation (a
 * deactivated account gets `deactivated` false and a password again). False when the user does
 * not exist.
 *
 * @example
 * await updateUser(db, '@alice:example.org', { admin: true }) // true
 */
export async function updateUser(db: Kysely<Database>, userId: string, change: { admin?: boolean; reactivateWith?: string }): Promise<boolean> {
  if (change.admin === undefined && change.reactivateWith === undefined) return (await getUser(db, userId)) !== undefined
  const result = await db
    .updateTable('users')
    .set({
      ...(change.admin !== undefined && { admin: change.admin }),
      ...(change.reactivateWith !== undefined && { deactivated: false, password_hash: change.reactivateWith }),
    })
    .where('user_id', '=', userId)
    .executeTakeFirst()
  return result.numUpdatedRows > 0n
}
