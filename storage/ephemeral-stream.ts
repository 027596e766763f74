import { sql, type Kysely, type Transaction } from 'kysely'
import type { Database } from './schema.js'

/**
 * The rooms' ephemeral stream: read receipts (storage/receipts.ts) and typing notifications
 * (storage/typing.ts), which /sync shows in each joined room's `ephemeral` section. Both tables
 * take their stream IDs from `receipts_stream_seq`.
 *
 * Ordering guarantee, as for account data (storage/account-data.ts): a writer allocates its
 * stream ID while holding one transaction-scoped advisory lock, kept until commit, so stream
 * IDs become visible in increasing order and the highest committed one (`ephemeralPosition`)
 * is a position below which nothing can still appear. Any process may write; the lock
 * serializes these writes across the deployment (one short upsert each).
 */

/** Advisory lock key of the ephemeral stream ('myrc'). */
const streamLockKey = 0x6d797263

/**
 * Takes the stream lock and allocates the next stream ID; MUST run inside a transaction that
 * then writes a row with that ID, or the SQL that writes it (see the guarantee above).
 *
 * @example
 * await db.transaction().execute(async (trx) => {
 *   await lockEphemeralStream(trx)
 *   await sql`INSERT INTO typing … VALUES (…, nextval('receipts_stream_seq'))`.execute(trx)
 * })
 */
export async function lockEphemeralStream(trx: Transaction<Database>): Promise<void> {
  await sql`SELECT pg_advisory_xact_lock(${streamLockKey})`.execute(trx)
}

/**
 * The stream's position: the highest committed stream ID of receipts or typing (1 when there
 * is none yet; the sequence starts at 2). Safe as an upper bound for readers, see above.
 *
 * @example
 * const upTo = await ephemeralPosition(db)
 */
export async function ephemeralPosition(db: Kysely<Database>): Promise<bigint> {
  const { rows } = await sql<{ position: string }>`SELECT ${ephemeralPositionSql} AS position`.execute(db)
  return BigInt(rows[0]?.position ?? 1)
}

/** `ephemeralPosition` as an SQL expression, to read it in one statement with others. */
export const ephemeralPositionSql = sql<bigint>`GREATEST((SELECT max(stream_id) FROM receipts), (SELECT max(stream_id) FROM typing), 1)::int8`

/**
 * Rooms with receipts or typing changed in `(after, upTo]`, each with the newest stream ID of
 * its changes.
 *
 * @example
 * await roomsWithEphemeralChanges(db, 41n, 45n) // Map { '!r:hs' => 44n }
 */
export async function roomsWithEphemeralChanges(db: Kysely<Database>, after: bigint, upTo: bigint): Promise<Map<string, bigint>> {
  const { rows } = await sql<{ room_id: string; newest: string }>`
    SELECT room_id, max(stream_id) AS newest FROM (
      SELECT room_id, stream_id FROM receipts WHERE stream_id > ${after} AND stream_id <= ${upTo}
      UNION ALL
      SELECT room_id, stream_id FROM typing WHERE stream_id > ${after} AND stream_id <= ${upTo}
    ) changes GROUP BY room_id`.execute(db)
  return new Map(rows.map((row) => [row.room_id, BigInt(row.newest)]))
}
