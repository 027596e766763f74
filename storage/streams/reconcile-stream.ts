import { sql, type Kysely } from 'kysely'
import type { Logger } from '../logger.js'
import type { Database } from '../schema.js'
import { readMaxAllocated, readStreamTableMax, sequenceName, type MultiWriterStream } from './stream-sequence.js'

/** Where a writer starts after `reconcileStream`. */
export interface ReconciledStream {
  /** The writer's stored position: its own row, or the linear position for a new writer. */
  readonly position: bigint
  /** Highest ID the sequence has handed out, after repair. */
  readonly maxAllocated: bigint
}

/**
 * Startup reconciliation of one writer of `stream` (ARCHITECTURE §3, Synapse reference 1.7,
 * 1.8). Repairs instead of refusing to start (Synapse #16095, #18544):
 *
 * 1. Sequence behind the highest ID in `events` (a restore, `pg_dump` without sequences,
 *    logical replication) → `setval` forward, warn.
 * 2. `stream_positions` rows of writers not in `writers` → deleted (a removed writer no
 *    longer pins anyone; re-added, it starts fresh).
 * 3. Stored positions ahead of the sequence (failover, restored backup) → clamped to the
 *    sequence, warn. Clamping is safe at startup: no ID above the sequence was ever handed out.
 * 4. `writer` without a row → a row at the linear position (the minimum over the remaining
 *    rows; the highest table ID when there are none), so it never claims more than readers
 *    already know is complete.
 *
 * Runs in one transaction under an advisory lock per stream, so writers starting together
 * reconcile one after the other. Writers already running are unaffected: their IDs and
 * positions are at or below the sequence.
 *
 * @example
 * const { position, maxAllocated } = await reconcileStream(db, { stream: 'events', writer: 'p1', writers: ['p1', 'p2'], log })
 */
export async function reconcileStream(
  db: Kysely<Database>,
  options: { stream: MultiWriterStream; writer: string; writers: readonly string[]; log: Logger },
): Promise<ReconciledStream> {
  const { stream, writer, writers, log } = options
  return db.transaction().execute(async (trx) => {
    await sql`SELECT pg_advisory_xact_lock(hashtextextended(${`myelin.stream.${stream}`}, 0))`.execute(trx)

    const tableMax = await readStreamTableMax(trx, stream)
    let maxAllocated = await readMaxAllocated(trx, stream)
    if (tableMax > maxAllocated) {
      // Conditional, in one statement: never moves the sequence backwards should a running
      // writer have allocated meanwhile.
      await sql`SELECT setval(${sequenceName(stream)}::regclass, ${tableMax})
                WHERE (SELECT last_value FROM ${sql.table(sequenceName(stream))}) < ${tableMax}`.execute(trx)
      log.warn({ sequence: maxAllocated, tableMax }, 'stream sequence was behind the events table: advanced it')
      maxAllocated = tableMax
    }

    const removed = await trx
      .deleteFrom('stream_positions')
      .where('stream_name', '=', stream)
      .where('instance_name', 'not in', [...writers])
      .returning('instance_name')
      .execute()
    if (removed.length > 0) {
      log.info({ removed: removed.map((row) => row.instance_name) }, 'dropped stream positions of writers no longer configured')
    }

    const rows = await trx
      .selectFrom('stream_positions')
      .select(['instance_name', 'stream_id'])
      .where('stream_name', '=', stream)
      .execute()
    const ahead = rows.filter((row) => BigInt(row.stream_id) > maxAllocated)
    if (ahead.length > 0) {
      await trx
        .updateTable('stream_positions')
        .set({ stream_id: maxAllocated })
        .where('stream_name', '=', stream)
        .where('stream_id', '>', maxAllocated)
        .execute()
      log.warn(
        { sequence: maxAllocated, ahead: ahead.map((row) => ({ writer: row.instance_name, position: String(row.stream_id) })) },
        'stored stream positions were ahead of the sequence: clamped them',
      )
    }
    const positions = new Map(rows.map((row) => [row.instance_name, min(BigInt(row.stream_id), maxAllocated)]))

    let position = positions.get(writer)
    if (position === undefined) {
      const others = [...positions.values()]
      position = others.length > 0 ? others.reduce(min) : min(tableMax > 1n ? tableMax : 1n, maxAllocated)
      await trx
        .insertInto('stream_positions')
        .values({ stream_name: stream, instance_name: writer, stream_id: position })
        .onConflict((oc) => oc.columns(['stream_name', 'instance_name']).doNothing())
        .execute()
      log.info({ position: String(position) }, 'new stream writer starts at the linear position')
    }
    return { position, maxAllocated }
  })
}

function min(a: bigint, b: bigint): bigint {
  return a < b ? a : b
}
