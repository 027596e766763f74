import { sql, type Kysely, type RawBuilder, type Transaction } from 'kysely'
import type { Database } from './schema.js'

/**
 * The single-writer-ordered streams a sync reads besides room events:
 * - `account_data`: account data and push rules (storage/account-data.ts, storage/push-rules.ts),
 *   keyed by user;
 * - `ephemeral`: read receipts and typing (storage/receipts.ts, storage/typing.ts), keyed by
 *   room; both take their stream IDs from `receipts_stream_seq`;
 * - `to_device`: messages to devices (storage/to-device.ts), whose position is a stored row;
 * - `presence`: users' presence (storage/presence.ts), keyed by user;
 * - `device_lists`: changes of users' devices and keys (storage/e2e-keys.ts), keyed by user.
 *
 * Ordering guarantee: any process may write, but a writer allocates its stream ID (`nextval`)
 * while holding the stream's transaction-scoped advisory lock (`lockOrderedStream`), kept until
 * commit. PostgreSQL makes a commit visible before it releases the transaction's locks, so
 * stream IDs become visible in increasing order: the highest committed one is a position below
 * which nothing can still appear, and readers need no per-writer tracking. The cost is that
 * each stream's writes are serialized across the deployment (one short transaction each).
 */
export type OrderedStream = 'account_data' | 'ephemeral' | 'to_device' | 'presence' | 'device_lists'

/** Advisory lock keys ('myad', 'myrc', 'mytd', 'mypr', 'mydl'); migrations use another. */
const lockKeys: Record<OrderedStream, number> = { account_data: 0x6d796164, ephemeral: 0x6d797263, to_device: 0x6d797464, presence: 0x6d797072, device_lists: 0x6d79646c }

/** The streams whose rows stay in their tables: position and changes come from the rows. */
export type TableStream = Exclude<OrderedStream, 'to_device'>

const streamTables: Record<TableStream, { readonly tables: readonly (keyof Database)[]; readonly key: string }> = {
  account_data: { tables: ['account_data', 'push_rules'], key: 'user_id' },
  ephemeral: { tables: ['receipts', 'typing'], key: 'room_id' },
  presence: { tables: ['presence'], key: 'user_id' },
  device_lists: { tables: ['device_lists_changes'], key: 'user_id' },
}

/**
 * Takes the stream's lock; MUST run inside the transaction that then allocates the stream IDs
 * and writes their rows (see the guarantee above).
 *
 * @example
 * await db.transaction().execute(async (trx) => {
 *   await lockOrderedStream(trx, 'ephemeral')
 *   await sql`INSERT INTO typing … VALUES (…, nextval('receipts_stream_seq'))`.execute(trx)
 * })
 */
export async function lockOrderedStream(trx: Transaction<Database>, stream: OrderedStream): Promise<void> {
  await sql`SELECT pg_advisory_xact_lock(${lockKeys[stream]})`.execute(trx)
}

/**
 * A table stream's position as an SQL expression: the highest committed stream ID of its tables
 * (1 when there is none yet; the sequences start at 2), to read in one statement with others.
 *
 * @example
 * await sql`SELECT ${streamPositionSql('ephemeral')} AS position`.execute(db)
 */
export function streamPositionSql(stream: TableStream): RawBuilder<bigint> {
  const maxima = streamTables[stream].tables.map((table) => sql`(SELECT max(stream_id) FROM ${sql.table(table)})`)
  return sql<bigint>`GREATEST(${sql.join(maxima)}, 1)::int8`
}

/**
 * A table stream's position (see `streamPositionSql`).
 *
 * @example
 * const upTo = await streamPosition(db, 'ephemeral')
 */
export async function streamPosition(db: Kysely<Database>, stream: TableStream): Promise<bigint> {
  const { rows } = await sql<{ position: string | bigint }>`SELECT ${streamPositionSql(stream)} AS position`.execute(db)
  return BigInt(rows[0]?.position ?? 1)
}

/**
 * The keys (users for account data, rooms for the ephemeral stream) with changes in
 * `(after, upTo]`, each with the newest stream ID of its changes (one index range scan per table).
 *
 * @example
 * await streamChanges(db, 'ephemeral', 41n, 45n) // Map { '!r:hs' => 44n }
 */
export async function streamChanges(db: Kysely<Database>, stream: TableStream, after: bigint, upTo: bigint): Promise<Map<string, bigint>> {
  const { tables, key } = streamTables[stream]
  const changes = tables.map((table) => sql`SELECT ${sql.ref(key)} AS key, stream_id FROM ${sql.table(table)} WHERE stream_id > ${after} AND stream_id <= ${upTo}`)
  const { rows } = await sql<{ key: string; newest: string | bigint }>`
    SELECT key, max(stream_id) AS newest FROM (${sql.join(changes, sql` UNION ALL `)}) changes GROUP BY key`.execute(db)
  return new Map(rows.map((row) => [row.key, BigInt(row.newest)]))
}
