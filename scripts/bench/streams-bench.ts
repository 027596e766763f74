/**
 * Issue 3 benchmark: multi-writer stream IDs (storage/streams).
 *
 * - `streams.ids`: IDs allocated and completed per second by W writers (W = 1, 4), each its own
 *   `createIdGenerator` with its own pool and Redis bus, each running `concurrency` loops of
 *   transactions that allocate `batch` IDs and commit. Baseline, same run and shape: raw
 *   `BEGIN; SELECT nextval(seq) FROM generate_series(1, batch); COMMIT` on the same sequence from
 *   W pools × `concurrency` loops. ratio = generator IDs/s ÷ raw IDs/s.
 * - `streams.propagation`: a writer (generator, own pool and bus connection) and a reader
 *   (`createStreamTracker`, other pool and bus connection), one transaction of one ID at a time.
 *   Reported: transaction resolved → tracker covers the ID (the brief's figure; the generator
 *   publishes before it resolves, so this is often 0), the generator's PUBLISH → covered, and
 *   COMMIT sent → covered. Baseline: raw PUBLISH → message on the same transport (two ioredis
 *   connections, or two pg clients with LISTEN and `pg_notify`). ratio = generator PUBLISH →
 *   covered p50 ÷ raw PUBLISH → message p50.
 */
import { Redis } from 'ioredis'
import pg from 'pg'
import { createDatabase, type DatabaseHandle } from '../../storage/database.js'
import { createBus, type Bus } from '../../storage/bus/bus.js'
import type { BusMessage } from '../../storage/bus/bus-message.js'
import { silentLogger } from '../../storage/logger.js'
import { createIdGenerator, type MultiWriterIdGenerator } from '../../storage/streams/id-generator.js'
import { createStreamTracker } from '../../storage/streams/stream-tracker.js'
import { alternate } from './alternate.js'
import { benchDatabases, rawPool, type BenchDatabase } from './bench-db.js'
import { closedLoop } from './closed-loop.js'
import type { BenchContext, BenchResult } from './context.js'
import { percentile, ratio, round, spread, type Spread } from './stats.js'

export interface IdThroughputResult extends BenchResult {
  readonly benchmark: 'streams.ids'
  readonly writers: number
  readonly concurrencyPerWriter: number
  readonly batch: number
  readonly durationMs: number
  readonly repeats: number
  readonly idsPerS: Spread
  readonly transactionsPerS: Spread
  readonly baselineIdsPerS: Spread
  readonly baselineTransactionsPerS: Spread
  readonly ratioMeaning: string
}

export interface LatencySpread {
  readonly p50: Spread
  readonly p99: Spread
}

export interface PropagationResult extends BenchResult {
  readonly benchmark: 'streams.propagation'
  readonly transport: 'redis' | 'postgres'
  readonly samplesPerRepeat: number
  readonly repeats: number
  readonly resolveToCoveredMs: LatencySpread
  /** Share of samples where the tracker covered the ID before the transaction resolved. */
  readonly coveredBeforeResolve: number
  readonly publishToCoveredMs: LatencySpread
  readonly commitToCoveredMs: LatencySpread
  readonly baselinePublishToMessageMs: LatencySpread
  readonly ratioMeaning: string
}

const serverName = `bench-${process.pid}.test`
const sequence = 'events_stream_seq'

export async function run(ctx: BenchContext): Promise<BenchResult[]> {
  const dbs = benchDatabases(ctx.adminUrl)
  const results: BenchResult[] = []
  try {
    const plans = ctx.quick
      ? [{ writers: 1, batch: 10 }]
      : [
          { writers: 1, batch: 1 },
          { writers: 1, batch: 100 },
          { writers: 4, batch: 1 },
          { writers: 4, batch: 100 },
        ]
    for (const plan of plans) {
      const db = await dbs.fresh(`ids_${plan.writers}w_${plan.batch}b`, { poolSize: 2 })
      try {
        results.push(await idThroughput(ctx, db, plan.writers, plan.batch))
      } finally {
        await db.drop()
      }
    }
    for (const transport of ['redis', 'postgres'] as const) {
      const db = await dbs.fresh(`propagation_${transport}`, { poolSize: 2 })
      try {
        results.push(await propagation(ctx, db, transport))
      } finally {
        await db.drop()
      }
    }
  } finally {
    await dbs.close()
  }
  return results
}

async function idThroughput(ctx: BenchContext, db: BenchDatabase, writers: number, batch: number): Promise<IdThroughputResult> {
  const concurrency = 4
  const durationMs = ctx.quick ? 300 : 2500
  const log = silentLogger()
  const names = Array.from({ length: writers }, (_, i) => `writer${i}`)
  const writerSides: { handle: DatabaseHandle; bus: Bus; generator: MultiWriterIdGenerator }[] = []
  const rawPools: pg.Pool[] = []
  try {
    for (const name of names) {
      const handle = createDatabase({ url: db.url, poolSize: concurrency + 1, applicationName: `bench-${name}` })
      const bus = createBus({ redis: { url: ctx.redisUrl }, serverName, log })
      await bus.start()
      const generator = await createIdGenerator({ db: handle.db, stream: 'events', writer: name, writers: names, bus, log })
      writerSides.push({ handle, bus, generator })
      rawPools.push(rawPool(db.url, concurrency))
    }
    const viaGenerator = () =>
      closedLoop(writers * concurrency, durationMs, async (worker) => {
        const side = writerSides[worker % writers]!
        await side.generator.transaction(async (_trx, allocate) => {
          await allocate(batch)
        })
        return batch
      })
    const raw = () =>
      closedLoop(writers * concurrency, durationMs, async (worker) => {
        const client = await rawPools[worker % writers]!.connect()
        try {
          await client.query('BEGIN')
          await client.query(`SELECT nextval('${sequence}') FROM generate_series(1, $1)`, [batch])
          await client.query('COMMIT')
        } finally {
          client.release()
        }
        return batch
      })
    const label = `streams.ids W=${writers} batch=${batch}`
    const measured = await alternate(ctx, label, viaGenerator, raw)
    const perS = (outcomes: { units: number; ops: number; elapsedMs: number }[], key: 'units' | 'ops') =>
      spread(outcomes.map((o) => (o[key] * 1000) / o.elapsedMs), 0)
    const idsPerS = perS(measured.subject, 'units')
    const baselineIdsPerS = perS(measured.baseline, 'units')
    return {
      benchmark: 'streams.ids',
      writers,
      concurrencyPerWriter: concurrency,
      batch,
      durationMs,
      repeats: ctx.repeats,
      idsPerS,
      transactionsPerS: perS(measured.subject, 'ops'),
      baselineIdsPerS,
      baselineTransactionsPerS: perS(measured.baseline, 'ops'),
      ratio: ratio(idsPerS.median, baselineIdsPerS.median),
      ratioMeaning: 'generator IDs/s ÷ raw nextval IDs/s (median of repeats; higher is better, 1 = parity)',
    }
  } finally {
    for (const side of writerSides) {
      await side.generator.close()
      await side.bus.close()
      await side.handle.close()
    }
    await Promise.all(rawPools.map((pool) => pool.end()))
  }
}

/** A bus that reports every POSITION it publishes to `onPublish` before publishing it. */
function observedBus(bus: Bus, onPublish: (message: BusMessage) => void): Bus {
  return {
    get transport() {
      return bus.transport
    },
    get state() {
      return bus.state
    },
    start: () => bus.start(),
    publish(message) {
      onPublish(message)
      return bus.publish(message)
    },
    subscribe: (handler) => bus.subscribe(handler),
    onStateChange: (handler) => bus.onStateChange(handler),
    close: () => bus.close(),
  }
}

interface PropagationSample {
  readonly resolveToCovered: number
  readonly publishToCovered: number
  readonly commitToCovered: number
  readonly coveredBeforeResolve: boolean
}

async function propagation(ctx: BenchContext, db: BenchDatabase, transport: 'redis' | 'postgres'): Promise<PropagationResult> {
  const samples = ctx.quick ? 20 : 300
  const log = silentLogger()
  const busOptions = transport === 'redis' ? { redis: { url: ctx.redisUrl }, serverName, log } : { databaseUrl: db.url, serverName, log }
  const writerDb = createDatabase({ url: db.url, poolSize: 2, applicationName: 'bench-writer' })
  const readerDb = createDatabase({ url: db.url, poolSize: 2, applicationName: 'bench-reader' })
  const published: { next: bigint; at: number }[] = []
  const writerBus = observedBus(createBus(busOptions), (message) => {
    if (message.type === 'POSITION') published.push({ next: message.next, at: performance.now() })
  })
  const readerBus = createBus(busOptions)
  const waiting = new Map<bigint, (at: number) => void>()
  let generator: MultiWriterIdGenerator | undefined
  const tracker = createStreamTracker({ db: readerDb.db, bus: readerBus, log, name: 'bench-reader' })
  try {
    await Promise.all([writerBus.start(), readerBus.start()])
    generator = await createIdGenerator({ db: writerDb.db, stream: 'events', writer: 'writer0', writers: ['writer0'], bus: writerBus, log })
    await tracker.start()
    tracker.onAdvance((_writer, _prev, next) => {
      const at = performance.now()
      for (const [id, resolve] of waiting) {
        if (id <= next) {
          waiting.delete(id)
          resolve(at)
        }
      }
    })
    const gen = generator
    const sampleOnce = async (): Promise<PropagationSample> => {
      let commitAt = 0
      let coveredAt: Promise<number> | undefined
      const id = await gen.transaction(async (_trx, allocate) => {
        const [allocated] = await allocate(1)
        const streamId = allocated as bigint
        coveredAt = new Promise<number>((resolve) => waiting.set(streamId, resolve))
        commitAt = performance.now()
        return streamId
      })
      const resolvedAt = performance.now()
      const covered = await (coveredAt as Promise<number>)
      const publishAt = published.find((p) => p.next >= id)?.at ?? resolvedAt
      published.length = 0
      return {
        resolveToCovered: Math.max(0, covered - resolvedAt),
        publishToCovered: Math.max(0, covered - publishAt),
        commitToCovered: covered - commitAt,
        coveredBeforeResolve: covered <= resolvedAt,
      }
    }
    const baseline = transport === 'redis' ? redisBaseline(ctx.redisUrl) : postgresBaseline(db.url)
    const rawSampler = await baseline
    try {
      const viaTracker: PropagationSample[][] = []
      const raw: number[][] = []
      for (let i = 0; i < ctx.repeats; i++) {
        ctx.progress(`streams.propagation ${transport}: repeat ${i + 1}/${ctx.repeats} (${samples} samples each)`)
        const mine: PropagationSample[] = []
        const theirs: number[] = []
        for (let s = 0; s < samples; s++) {
          mine.push(await sampleOnce())
          theirs.push(await rawSampler.sample())
        }
        viaTracker.push(mine)
        raw.push(theirs)
      }
      const latency = (runs: number[][]): LatencySpread => ({
        p50: spread(runs.map((values) => percentile(values, 50))),
        p99: spread(runs.map((values) => percentile(values, 99))),
      })
      const pick = (key: 'resolveToCovered' | 'publishToCovered' | 'commitToCovered') => latency(viaTracker.map((run) => run.map((s) => s[key])))
      const publishToCoveredMs = pick('publishToCovered')
      const baselinePublishToMessageMs = latency(raw)
      const all = viaTracker.flat()
      return {
        benchmark: 'streams.propagation',
        transport,
        samplesPerRepeat: samples,
        repeats: ctx.repeats,
        resolveToCoveredMs: pick('resolveToCovered'),
        coveredBeforeResolve: round(all.filter((s) => s.coveredBeforeResolve).length / all.length, 3),
        publishToCoveredMs,
        commitToCoveredMs: pick('commitToCovered'),
        baselinePublishToMessageMs,
        ratio: ratio(publishToCoveredMs.p50.median, baselinePublishToMessageMs.p50.median),
        ratioMeaning: 'generator PUBLISH → tracker covers, p50 ÷ raw PUBLISH → message p50 (lower is better, 1 = parity)',
      }
    } finally {
      await rawSampler.close()
    }
  } finally {
    await tracker.close()
    await generator?.close()
    await Promise.allSettled([writerBus.close(), readerBus.close()])
    await Promise.all([writerDb.close(), readerDb.close()])
  }
}

/** One raw publish → receive round at a time, in milliseconds. */
interface RawSampler {
  sample(): Promise<number>
  close(): Promise<void>
}

const rawPayload = 'POSITION events writer0 1000000 1000001 !abcdefghijklmnopqr:bench.test'

async function redisBaseline(url: string): Promise<RawSampler> {
  const channel = `bench-raw-${process.pid}`
  const subscriber = new Redis(url)
  const publisher = new Redis(url)
  let pending: ((at: number) => void) | undefined
  subscriber.on('message', () => {
    const at = performance.now()
    pending?.(at)
    pending = undefined
  })
  await subscriber.subscribe(channel)
  return {
    async sample() {
      const received = new Promise<number>((resolve) => (pending = resolve))
      const sent = performance.now()
      await publisher.publish(channel, rawPayload)
      return (await received) - sent
    },
    async close() {
      subscriber.disconnect()
      publisher.disconnect()
    },
  }
}

async function postgresBaseline(url: string): Promise<RawSampler> {
  const channel = `bench_raw_${process.pid}`
  const listener = new pg.Client({ connectionString: url })
  const notifier = new pg.Client({ connectionString: url })
  await Promise.all([listener.connect(), notifier.connect()])
  let pending: ((at: number) => void) | undefined
  listener.on('notification', () => {
    const at = performance.now()
    pending?.(at)
    pending = undefined
  })
  await listener.query(`LISTEN ${channel}`)
  return {
    async sample() {
      const received = new Promise<number>((resolve) => (pending = resolve))
      const sent = performance.now()
      await notifier.query('SELECT pg_notify($1, $2)', [channel, rawPayload])
      return (await received) - sent
    },
    async close() {
      await Promise.all([listener.end(), notifier.end()])
    },
  }
}
