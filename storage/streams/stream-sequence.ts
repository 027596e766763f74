import { sql, type Kysely } from 'kysely'
import type { Database } from '../schema.js'

/**
 * The multi-writer streams (ARCHITECTURE §3). Both draw positive IDs from their own Postgres
 * sequence; `backfill` IDs are stored negated in `events.stream_ordering` (-2, -3, …) and are
 * positive everywhere else (positions, `stream_positions`, bus messages, tokens).
 */
export type MultiWriterStream = 'events' | 'backfill'

/** Every multi-writer stream, in a fixed order. */
export const multiWriterStreams: readonly MultiWriterStream[] = ['events', 'backfill']

const sequences: Record<MultiWriterStream, string> = {
  events: 'events_stream_seq',
  backfill: 'events_backfill_stream_seq',
}

/**
 * Name of the Postgres sequence behind `stream` (created by `migrations/0001-streams.sql`).
 *
 * @example
 * sequenceName('backfill') // 'events_backfill_stream_seq'
 */
export function sequenceName(stream: MultiWriterStream): string {
  return sequences[stream]
}

/**
 * The `events.stream_ordering` of stream ID `id` (positive): `id` for `events`, `-id` for
 * `backfill`.
 *
 * @example
 * toStreamOrdering('backfill', 7n) // -7n
 */
export function toStreamOrdering(stream: MultiWriterStream, id: bigint): bigint {
  return stream === 'backfill' ? -id : id
}

/**
 * Highest ID the sequence has handed out (or skipped past): `last_value`, minus one when the
 * sequence was never called since its last `setval(…, false)`. Every ID allocated from now on
 * is strictly greater. A fresh sequence (one `nextval` in the migration) reads 1.
 *
 * @example
 * await readMaxAllocated(db, 'events') // 1n on a fresh database
 */
export async function readMaxAllocated(db: Kysely<Database>, stream: MultiWriterStream): Promise<bigint> {
  const { rows } = await sql<{ last_value: bigint | string; is_called: boolean }>`
    SELECT last_value, is_called FROM ${sql.table(sequenceName(stream))}`.execute(db)
  const row = rows[0]
  if (!row) return 0n
  const last = BigInt(row.last_value)
  return row.is_called ? last : last - 1n
}

/**
 * Largest ID of `stream` stored in the `events` table (as a positive stream ID), 0 when none.
 *
 * @example
 * await readStreamTableMax(db, 'backfill') // 40n when the lowest stream_ordering is -40
 */
export async function readStreamTableMax(db: Kysely<Database>, stream: MultiWriterStream): Promise<bigint> {
  const { rows } =
    stream === 'events'
      ? await sql<{ max: bigint | string }>`
          SELECT COALESCE(MAX(stream_ordering), 0) AS max FROM events WHERE stream_ordering > 0`.execute(db)
      : await sql<{ max: bigint | string }>`
          SELECT COALESCE(-MIN(stream_ordering), 0) AS max FROM events WHERE stream_ordering < 0`.execute(db)
  return BigInt(rows[0]?.max ?? 0)
}

/**
 * Stream IDs (positive) of committed `events` rows in (`after`, `upTo`], ascending, at most
 * `limit` of them. Used to extend the linear position over gap-free runs of committed IDs.
 *
 * @example
 * await readCommittedIds(db, 'events', 10n, 20n, 100) // [11n, 12n, 14n]
 */
export async function readCommittedIds(
  db: Kysely<Database>,
  stream: MultiWriterStream,
  after: bigint,
  upTo: bigint,
  limit: number,
): Promise<bigint[]> {
  const { rows } =
    stream === 'events'
      ? await sql<{ id: bigint | string }>`
          SELECT stream_ordering AS id FROM events
          WHERE stream_ordering > ${after} AND stream_ordering <= ${upTo}
          ORDER BY stream_ordering LIMIT ${limit}`.execute(db)
      : await sql<{ id: bigint | string }>`
          SELECT -stream_ordering AS id FROM events
          WHERE stream_ordering < ${-after} AND stream_ordering >= ${-upTo}
          ORDER BY stream_ordering DESC LIMIT ${limit}`.execute(db)
  return rows.map((row) => BigInt(row.id))
}
