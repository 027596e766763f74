/**
 * Gathering under load (`persister.gather_*`, persisters/commit-groups.ts) against a closed loop:
 * does a persister that gathers cost callers who all wait on its last transaction?
 *
 * Two persisters run side by side on two fresh databases, one with the default gathering
 * (`gather_ms` 4) and one with it off (`gather_ms` 0), each driven by 32 closed-loop callers
 * sending one event per request (persister-driver.ts, as in `persister.throughput`). Drives of
 * 3 s alternate between them (on, off, off, on, …), so a phase of the machine hits both alike.
 * Baseline: the persister with gathering off. ratio = gathering events/s ÷ off events/s
 * (medians); `pairRatios` gives each alternated pair's own ratio.
 */
import { alternate } from './alternate.js'
import { benchDatabases } from './bench-db.js'
import type { BenchContext, BenchResult } from './context.js'
import { createRooms, drivePersister, startBenchPersister } from './persister-driver.js'
import { ratio, round, spread, type Spread } from './stats.js'

export interface GatherResult extends BenchResult {
  readonly benchmark: 'persister.gather'
  readonly rooms: number
  readonly concurrentRequests: number
  readonly durationMs: number
  /** Drives per variant. */
  readonly repeats: number
  readonly eventsPerS: Spread
  readonly baselineEventsPerS: Spread
  readonly pairRatios: number[]
  readonly ratioMeaning: string
}

const concurrency = 32

export async function run(ctx: BenchContext): Promise<BenchResult[]> {
  const dbs = benchDatabases(ctx.adminUrl)
  const durationMs = ctx.quick ? 500 : 3000
  const drives = ctx.quick ? 1 : Math.max(6, ctx.repeats * 2)
  const results: BenchResult[] = []
  try {
    for (const rooms of ctx.quick ? [10] : [1, 1000]) {
      const label = `persister.gather rooms=${rooms}`
      const start = async (name: string, gatherMs: number) => {
        const db = await dbs.fresh(`gather_${rooms}r_${name}`, { poolSize: 2 })
        const bench = await startBenchPersister(db.url, ctx.redisUrl, { gatherMs })
        ctx.progress(`${label}: creating ${rooms} rooms (gathering ${name})`)
        return { db, bench, rooms: await createRooms(bench.persister, rooms, concurrency) }
      }
      const on = await start('on', 4)
      const off = await start('off', 0)
      try {
        const drive = async (variant: typeof on, ms: number) => {
          const outcome = await drivePersister(variant.bench.persister, variant.rooms, 1, concurrency, ms)
          return (outcome.units * 1000) / outcome.elapsedMs
        }
        if (!ctx.quick) {
          ctx.progress(`${label}: warm-up`)
          await drive(on, 500)
          await drive(off, 500)
        }
        const { subject: gathering, baseline } = await alternate(ctx, label, () => drive(on, durationMs), () => drive(off, durationMs), { repeats: drives, warmUp: false })
        const eventsPerS = spread(gathering, 0)
        const baselineEventsPerS = spread(baseline, 0)
        const result: GatherResult = {
          benchmark: 'persister.gather',
          rooms,
          concurrentRequests: concurrency,
          durationMs,
          repeats: drives,
          eventsPerS,
          baselineEventsPerS,
          pairRatios: gathering.map((perS, i) => round(perS / (baseline[i] as number), 2)),
          ratio: ratio(eventsPerS.median, baselineEventsPerS.median),
          ratioMeaning: 'events/s with gathering (gather_ms 4) ÷ events/s with it off, one event per request, 32 closed-loop callers (1 = no cost)',
        }
        results.push(result)
      } finally {
        for (const variant of [on, off]) {
          await variant.bench.close()
          await variant.db.drop()
        }
      }
    }
  } finally {
    await dbs.close()
  }
  return results
}
