/**
 * Issue 4 benchmark, throughput: the persister core through the library (no HTTP), events/s for
 * 1 room and 1,000 rooms at 1, 10 and 100 events per persist request.
 *
 * How it is driven: 32 concurrent callers in a closed loop (each sends its next request as soon as
 * the previous one is answered, i.e. after commit); caller k sends to rooms k, k+32, …; one
 * persister (writer `persister1`, pool of 10, Redis bus, defaults: 32 rooms in parallel, batches
 * of up to 200 events). With 1 room the persister queues the 32 concurrent requests on the room
 * and merges them into batch transactions (`meanEventsPerTransaction` reports the real size);
 * with 1,000 rooms each transaction is mostly one request.
 *
 * Baseline (same run, same database, alternating with the persister): the same 32 callers and
 * room pattern, each request one transaction of raw multi-row SQL writing the same rows
 * (persister-driver.ts `driveRaw`) on a pool of 10. ratio = persister events/s ÷ raw events/s.
 */
import { alternate } from './alternate.js'
import { benchDatabases, rawPool } from './bench-db.js'
import type { BenchContext, BenchResult } from './context.js'
import { createRawRooms, createRooms, drivePersister, driveRaw, poolSize, startBenchPersister } from './persister-driver.js'
import { ratio, spread, type Spread } from './stats.js'

export interface PersisterThroughputResult extends BenchResult {
  readonly benchmark: 'persister.throughput'
  readonly rooms: number
  /** Events per persist request. */
  readonly batch: number
  readonly concurrentRequests: number
  readonly durationMs: number
  readonly repeats: number
  readonly eventsPerS: Spread
  readonly meanEventsPerTransaction: Spread
  readonly baselineEventsPerS: Spread
  readonly ratioMeaning: string
}

const concurrency = 32

export async function run(ctx: BenchContext): Promise<BenchResult[]> {
  const dbs = benchDatabases(ctx.adminUrl)
  const durationMs = ctx.quick ? 500 : 3000
  const plans = ctx.quick
    ? [{ rooms: 10, batch: 10 }]
    : [1, 1000].flatMap((rooms) => [1, 10, 100].map((batch) => ({ rooms, batch })))
  const results: BenchResult[] = []
  try {
    for (const plan of plans) {
      const label = `persister.throughput rooms=${plan.rooms} batch=${plan.batch}`
      const db = await dbs.fresh(`persister_${plan.rooms}r_${plan.batch}b`, { poolSize: 2 })
      const bench = await startBenchPersister(db.url, ctx.redisUrl)
      const raw = rawPool(db.url, poolSize)
      try {
        ctx.progress(`${label}: creating ${plan.rooms} rooms`)
        const rooms = await createRooms(bench.persister, plan.rooms, concurrency)
        const rawRooms = await createRawRooms(raw, plan.rooms)
        const persisterRun = async () => {
          await bench.takeMeanBatch()
          const outcome = await drivePersister(bench.persister, rooms, plan.batch, concurrency, durationMs)
          return { perS: (outcome.units * 1000) / outcome.elapsedMs, meanBatch: await bench.takeMeanBatch() }
        }
        const rawRun = async () => {
          const outcome = await driveRaw(raw, rawRooms, plan.batch, concurrency, durationMs)
          return (outcome.units * 1000) / outcome.elapsedMs
        }
        if (!ctx.quick) {
          ctx.progress(`${label}: warm-up`)
          await drivePersister(bench.persister, rooms, plan.batch, concurrency, 500)
          await driveRaw(raw, rawRooms, plan.batch, concurrency, 500)
        }
        const { subject: measured, baseline } = await alternate(ctx, label, persisterRun, rawRun, { warmUp: false })
        const eventsPerS = spread(measured.map((m) => m.perS), 0)
        const baselineEventsPerS = spread(baseline, 0)
        const result: PersisterThroughputResult = {
          benchmark: 'persister.throughput',
          rooms: plan.rooms,
          batch: plan.batch,
          concurrentRequests: concurrency,
          durationMs,
          repeats: ctx.repeats,
          eventsPerS,
          meanEventsPerTransaction: spread(measured.map((m) => m.meanBatch), 1),
          baselineEventsPerS,
          ratio: ratio(eventsPerS.median, baselineEventsPerS.median),
          ratioMeaning: 'persister events/s ÷ raw multi-row INSERT events/s, same rows per request (higher is better, 1 = parity)',
        }
        results.push(result)
      } finally {
        await bench.close()
        await raw.end()
        await db.drop()
      }
    }
  } finally {
    await dbs.close()
  }
  return results
}
