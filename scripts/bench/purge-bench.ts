/**
 * History purges (admin purge_history and retention, storage/history-purge.ts): how fast old
 * events are deleted, against the plainest delete of the same rows.
 *
 * A fresh durable database with rooms created through the persister, then, for each round, two
 * fresh sets of rooms preloaded with the same number of message events (stored-bench.ts
 * `preload`: events, event_json, event_edges). One set is purged the product's way, room by room
 * up to a point past every preloaded event (chunks of 1,000 events, one transaction each with
 * the cursor and the backward extremities); the other has the same rows deleted by three bare
 * `DELETE`s per room in one transaction (event_json, event_edges, events), nothing else. The two
 * alternate which goes first. ratio = purge events/s ÷ bare-delete events/s (below 1: what the
 * chunks and the DAG bookkeeping cost).
 */
import type { BenchContext, BenchResult } from './context.js'
import { benchDatabases, rawPool } from './bench-db.js'
import { createRooms, serverName, startBenchPersister } from './persister-driver.js'
import { ratio, spread, type Spread } from './stats.js'
import { preload } from './stored-bench.js'
import { runHistoryPurge, startHistoryPurge } from '../../storage/history-purge.js'

interface PurgeResult extends BenchResult {
  readonly benchmark: 'purge.history'
  readonly rooms: number
  readonly eventsPerRound: number
  readonly repeats: number
  readonly eventsPerS: Spread
  readonly baselineEventsPerS: Spread
  readonly ratioMeaning: string
}

/** Past every preloaded event's depth (they start at 20 and go up by one per event of their room). */
const pastEverything = 1_000_000_000n

export async function run(ctx: BenchContext): Promise<BenchResult[]> {
  const roomsPerSet = ctx.quick ? 2 : 10
  const events = ctx.quick ? 2_000 : 100_000
  const dbs = benchDatabases(ctx.adminUrl)
  const db = await dbs.fresh('purge', { poolSize: 4 })
  const bench = await startBenchPersister(db.url, ctx.redisUrl)
  const pool = rawPool(db.url, 1)
  const purged: number[] = []
  const deleted: number[] = []
  try {
    for (let round = 0; round < ctx.repeats; round++) {
      const sets: string[][] = []
      for (const side of ['purge', 'delete']) {
        const rooms = await createRooms(bench.persister, roomsPerSet, roomsPerSet)
        await preload(pool, rooms, events, (done) => ctx.progress(`purge round ${round + 1}/${ctx.repeats}: preloaded ${done.toLocaleString('en')} events for the ${side} side`), `r${round}${side}`)
        sets.push(rooms)
      }
      await pool.query('ANALYZE')
      await pool.query('CHECKPOINT')
      const [purgeRooms, deleteRooms] = sets as [string[], string[]]
      const sides = [
        async () => {
          const started = performance.now()
          let count = 0
          for (const roomId of purgeRooms) {
            const purgeId = `bench-${round}-${roomId}`
            await startHistoryPurge(db.db, { purgeId, roomId, upToDepth: pastEverything, deleteLocalEvents: true, now: Date.now() })
            await runHistoryPurge(db.db, purgeId, { localServer: serverName, onChunk: (n) => (count += n) })
          }
          purged.push((count * 1000) / (performance.now() - started))
          ctx.progress(`purge round ${round + 1}/${ctx.repeats}: purge ${Math.round(purged.at(-1)!)} events/s (${count} events)`)
        },
        async () => {
          const started = performance.now()
          let count = 0
          for (const roomId of deleteRooms) {
            const client = await pool.connect()
            try {
              await client.query('BEGIN')
              const victims = `SELECT event_id FROM events WHERE room_id = $1 AND depth < $2 AND state_key IS NULL`
              await client.query(`DELETE FROM event_json WHERE event_id IN (${victims})`, [roomId, pastEverything])
              await client.query(`DELETE FROM event_edges WHERE event_id IN (${victims})`, [roomId, pastEverything])
              count += (await client.query(`DELETE FROM events WHERE room_id = $1 AND depth < $2 AND state_key IS NULL`, [roomId, pastEverything])).rowCount ?? 0
              await client.query('COMMIT')
            } finally {
              client.release()
            }
          }
          deleted.push((count * 1000) / (performance.now() - started))
          ctx.progress(`purge round ${round + 1}/${ctx.repeats}: bare delete ${Math.round(deleted.at(-1)!)} events/s (${count} events)`)
        },
      ]
      for (const side of round % 2 === 0 ? sides : [...sides].reverse()) await side()
    }
    const eventsPerS = spread(purged, 0)
    const baselineEventsPerS = spread(deleted, 0)
    const result: PurgeResult = {
      benchmark: 'purge.history',
      rooms: roomsPerSet,
      eventsPerRound: events,
      repeats: ctx.repeats,
      eventsPerS,
      baselineEventsPerS,
      ratio: ratio(eventsPerS.median, baselineEventsPerS.median),
      ratioMeaning: 'history purge events/s ÷ bare DELETE of the same rows events/s (higher is better; at most about 1)',
    }
    return [result]
  } finally {
    await pool.end()
    await bench.close()
    await db.drop()
    await dbs.close()
  }
}
