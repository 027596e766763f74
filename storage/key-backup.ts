import { sql, type Kysely, type Transaction } from 'kysely'
import { StorageError } from './errors.js'
import type { Database } from './schema.js'

/**
 * Server-side key backup (client-server API "Server-side key backups"): a user's backup
 * versions, each with its algorithm and `auth_data` (the client's, kept as given), and the room
 * keys backed up in them (`session_data` encrypted by the client). The current version is the
 * newest not deleted; keys are written to the current version only, so that a client holding
 * an old one learns of the new one. Each change of a version's keys moves its `etag`.
 *
 * Which key to keep (Synapse's rule): of two backups of one session, a verified one wins over
 * an unverified one, then the one with the lower `first_message_index` (it decrypts more), then
 * the one forwarded fewer times.
 */

type Json = Record<string, unknown>

/** A backup version as GET /room_keys/version answers it. */
export interface BackupVersion {
  readonly version: string
  readonly algorithm: string
  readonly auth_data: Json
  readonly count: number
  readonly etag: string
}

/** One backed-up session (`KeyBackupData`). */
export interface KeyBackupData {
  readonly first_message_index: number
  readonly forwarded_count: number
  readonly is_verified: boolean
  readonly session_data: Json
}

/** Sessions by room and session ID. */
export type RoomKeys = Readonly<Record<string, Readonly<Record<string, KeyBackupData>>>>

/**
 * Creates a new backup version, which becomes the current one.
 *
 * @example
 * await createBackupVersion(db, '@a:hs', { algorithm: 'm.megolm_backup.v1.curve25519-aes-sha2', auth_data: { public_key: '…' } }) // '1'
 */
export async function createBackupVersion(db: Kysely<Database>, userId: string, info: { algorithm: string; auth_data: Json }): Promise<string> {
  return db.transaction().execute(async (trx) => {
    await lockUserBackups(trx, userId)
    const { rows } = await sql<{ version: string }>`
      INSERT INTO e2e_room_keys_versions (user_id, version, algorithm, auth_data)
      SELECT ${userId}, coalesce(max(version), 0) + 1, ${info.algorithm}, ${JSON.stringify(info.auth_data)}
      FROM e2e_room_keys_versions WHERE user_id = ${userId}
      RETURNING version`.execute(trx)
    return String(rows[0]!.version)
  })
}

/**
 * A backup version (the current one when `version` is undefined), with its key count; undefined
 * when there is none, or it was deleted.
 *
 * @example
 * await getBackupVersion(db, '@a:hs') // { version: '2', algorithm: '…', auth_data: {…}, count: 40, etag: '7' }
 */
export async function getBackupVersion(db: Kysely<Database> | Transaction<Database>, userId: string, version?: string): Promise<BackupVersion | undefined> {
  if (version !== undefined && parseVersion(version) === undefined) return undefined
  let query = db
    .selectFrom('e2e_room_keys_versions as v')
    .select((eb) => [
      'v.version',
      'v.algorithm',
      'v.auth_data',
      'v.etag',
      eb
        .selectFrom('e2e_room_keys as k')
        .select((k) => k.fn.countAll<string>().as('n'))
        .whereRef('k.user_id', '=', 'v.user_id')
        .whereRef('k.version', '=', 'v.version')
        .as('count'),
    ])
    .where('v.user_id', '=', userId)
    .where('v.deleted', '=', false)
  query = version === undefined ? query.orderBy('v.version', 'desc').limit(1) : query.where('v.version', '=', parseVersion(version)!)
  const row = await query.executeTakeFirst()
  if (row === undefined) return undefined
  return { version: String(row.version), algorithm: row.algorithm, auth_data: JSON.parse(row.auth_data) as Json, count: Number(row.count ?? 0), etag: String(row.etag) }
}

/**
 * Replaces a version's `auth_data` (its algorithm stays).
 *
 * @throws StorageError `ES_INVALID_PARAM` when `info` names another algorithm.
 * @returns false when the version does not exist (or was deleted).
 * @example
 * await updateBackupVersion(db, '@a:hs', '1', { algorithm, auth_data: { public_key: '…', signatures: {…} } }) // true
 */
export async function updateBackupVersion(db: Kysely<Database>, userId: string, version: string, info: { algorithm: string; auth_data: Json }): Promise<boolean> {
  const current = await getBackupVersion(db, userId, version)
  if (current === undefined) return false
  if (current.algorithm !== info.algorithm) throw new StorageError('ES_INVALID_PARAM', 'The algorithm of a backup version cannot change')
  await db.updateTable('e2e_room_keys_versions').set({ auth_data: JSON.stringify(info.auth_data) }).where('user_id', '=', userId).where('version', '=', parseVersion(version)!).execute()
  return true
}

/**
 * Deletes a backup version and its keys.
 *
 * @returns false when the version does not exist (or was deleted already).
 * @example
 * await deleteBackupVersion(db, '@a:hs', '1') // true
 */
export async function deleteBackupVersion(db: Kysely<Database>, userId: string, version: string): Promise<boolean> {
  const number = parseVersion(version)
  if (number === undefined) return false
  return db.transaction().execute(async (trx) => {
    const result = await trx
      .updateTable('e2e_room_keys_versions')
      .set({ deleted: true })
      .where('user_id', '=', userId)
      .where('version', '=', number)
      .where('deleted', '=', false)
      .executeTakeFirst()
    await trx.deleteFrom('e2e_room_keys').where('user_id', '=', userId).where('version', '=', number).execute()
    return Number(result.numUpdatedRows) > 0
  })
}

/** What a write of keys answers: the version's key count and etag after it. */
export interface BackupCounts {
  readonly count: number
  readonly etag: string
}

/**
 * Backs up sessions into `version`, which must be the current one; each replaces the stored
 * backup of its session only when it is better (module comment).
 *
 * @returns `{ kind: 'stored' }` with the counts; `not-found` when the user has no backup;
 *   `wrong-version` (with the current one) when `version` is not the current one.
 * @example
 * await putRoomKeys(db, '@a:hs', '1', { '!r:hs': { sessionId: { first_message_index: 0, forwarded_count: 0, is_verified: true, session_data: {…} } } })
 */
export async function putRoomKeys(
  db: Kysely<Database>,
  userId: string,
  version: string,
  rooms: RoomKeys,
): Promise<({ kind: 'stored' } & BackupCounts) | { kind: 'not-found' } | { kind: 'wrong-version'; current: string }> {
  return db.transaction().execute(async (trx) => {
    await lockUserBackups(trx, userId)
    const current = await getBackupVersion(trx, userId)
    if (current === undefined) return { kind: 'not-found' as const }
    if (current.version !== version) return { kind: 'wrong-version' as const, current: current.version }
    const number = parseVersion(version)!
    let changed = 0
    for (const [roomId, sessions] of Object.entries(rooms)) {
      for (const [sessionId, key] of Object.entries(sessions)) {
        const result = await sql`
          INSERT INTO e2e_room_keys AS k (user_id, version, room_id, session_id, first_message_index, forwarded_count, is_verified, session_data)
          VALUES (${userId}, ${number}, ${roomId}, ${sessionId}, ${key.first_message_index}, ${key.forwarded_count}, ${key.is_verified}, ${JSON.stringify(key.session_data)})
          ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE
            SET first_message_index = excluded.first_message_index, forwarded_count = excluded.forwarded_count,
                is_verified = excluded.is_verified, session_data = excluded.session_data
            WHERE (excluded.is_verified AND NOT k.is_verified)
               OR (excluded.is_verified = k.is_verified AND (excluded.first_message_index < k.first_message_index
                   OR (excluded.first_message_index = k.first_message_index AND excluded.forwarded_count < k.forwarded_count)))`.execute(trx)
        changed += Number(result.numAffectedRows ?? 0)
      }
    }
    if (changed > 0) await bumpEtag(trx, userId, number)
    const after = await getBackupVersion(trx, userId, version)
    return { kind: 'stored' as const, count: after!.count, etag: after!.etag }
  })
}

/** Which keys of a version a read or delete covers: all, a room's, or one session. */
export interface KeySelection {
  readonly roomId?: string
  readonly sessionId?: string
}

/**
 * The backed-up keys of `version` in `selection`; undefined when the version does not exist.
 *
 * @example
 * await getRoomKeys(db, '@a:hs', '1', { roomId: '!r:hs' }) // { '!r:hs': { sessionId: {…} } }
 */
export async function getRoomKeys(db: Kysely<Database>, userId: string, version: string, selection: KeySelection = {}): Promise<Record<string, Record<string, KeyBackupData>> | undefined> {
  if ((await getBackupVersion(db, userId, version)) === undefined) return undefined
  let query = db
    .selectFrom('e2e_room_keys')
    .select(['room_id', 'session_id', 'first_message_index', 'forwarded_count', 'is_verified', 'session_data'])
    .where('user_id', '=', userId)
    .where('version', '=', parseVersion(version)!)
  if (selection.roomId !== undefined) query = query.where('room_id', '=', selection.roomId)
  if (selection.sessionId !== undefined) query = query.where('session_id', '=', selection.sessionId)
  const rooms: Record<string, Record<string, KeyBackupData>> = {}
  for (const row of await query.orderBy('room_id').orderBy('session_id').execute()) {
    rooms[row.room_id] ??= {}
    rooms[row.room_id]![row.session_id] = {
      first_message_index: row.first_message_index,
      forwarded_count: row.forwarded_count,
      is_verified: row.is_verified,
      session_data: JSON.parse(row.session_data) as Json,
    }
  }
  return rooms
}

/**
 * Deletes the backed-up keys of `version` in `selection`; undefined when the version does not
 * exist.
 *
 * @example
 * await deleteRoomKeys(db, '@a:hs', '1', { roomId: '!r:hs' }) // { count: 12, etag: '8' }
 */
export async function deleteRoomKeys(db: Kysely<Database>, userId: string, version: string, selection: KeySelection = {}): Promise<BackupCounts | undefined> {
  return db.transaction().execute(async (trx) => {
    await lockUserBackups(trx, userId)
    if ((await getBackupVersion(trx, userId, version)) === undefined) return undefined
    const number = parseVersion(version)!
    let query = trx.deleteFrom('e2e_room_keys').where('user_id', '=', userId).where('version', '=', number)
    if (selection.roomId !== undefined) query = query.where('room_id', '=', selection.roomId)
    if (selection.sessionId !== undefined) query = query.where('session_id', '=', selection.sessionId)
    const result = await query.executeTakeFirst()
    if (Number(result.numDeletedRows) > 0) await bumpEtag(trx, userId, number)
    const after = await getBackupVersion(trx, userId, version)
    return { count: after!.count, etag: after!.etag }
  })
}

/** Serializes a user's backup writes (version creation, key writes), so that "current" holds. */
async function lockUserBackups(trx: Transaction<Database>, userId: string): Promise<void> {
  await sql`SELECT pg_advisory_xact_lock(hashtextextended(${`room_keys ${userId}`}, 0))`.execute(trx)
}

async function bumpEtag(trx: Transaction<Database>, userId: string, version: bigint): Promise<void> {
  await trx
    .updateTable('e2e_room_keys_versions')
    .set((eb) => ({ etag: eb('etag', '+', 1n) }))
    .where('user_id', '=', userId)
    .where('version', '=', version)
    .execute()
}

/** A version's number, or undefined when `text` is not a canonical positive integer. */
function parseVersion(text: string): bigint | undefined {
  return /^[1-9][0-9]{0,17}$/.test(text) ? BigInt(text) : undefined
}
