import pg from 'pg'
import type { TraceRow } from './workload.js'

/**
 * Per-room counts of persisted (non-outlier) events in a Myelin database. The order makes the
 * trace, and so the simulation, deterministic for a given database state.
 */
export const traceQuery =
  'SELECT room_id, count(*) AS events FROM events WHERE outlier = false GROUP BY room_id ORDER BY room_id'

/**
 * Reads a trace from the `events` table of the Myelin database at `url` (read-only, one query,
 * one connection closed before returning).
 *
 * @example
 * const rows = await loadTraceFromDatabase('postgres://myelin@localhost/myelin')
 */
export async function loadTraceFromDatabase(url: string): Promise<TraceRow[]> {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    const result = await client.query<{ room_id: string; events: string }>(traceQuery)
    return result.rows.map((row) => ({ roomId: row.room_id, events: Number(row.events) }))
  } finally {
    await client.end()
  }
}
