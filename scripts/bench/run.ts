/**
 * `make bench`: runs the benchmark modules and prints JSON lines on stdout — first one
 * `{"kind":"machine",…}` line, then one `{"kind":"result","machine":<id>,…}` line per result
 * (or `{"kind":"error",…}` when a module failed; the exit code is then 1). Progress goes to
 * stderr. Needs MYELIN_TEST_DATABASE_URL (a superuser URL) and MYELIN_TEST_REDIS_URL, as
 * exported by scripts/test-services.sh. See scripts/bench/RESULTS.md.
 *
 * @example
 * MYELIN_PG_DURABLE=1 scripts/test-services.sh node --import tsx scripts/bench/run.ts --only streams --repeats 5
 * scripts/test-services.sh node --import tsx scripts/bench/run.ts --quick   # smoke run, seconds
 */
import { writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { Command, InvalidArgumentError } from 'commander'
import type { BenchContext, BenchModule, BenchResult } from './context.js'
import { describeMachine } from './machine.js'

/** Every benchmark module, by the name `--only` selects; each exports `run(ctx)`. */
const modules: Record<string, () => Promise<BenchModule>> = {
  streams: () => import('./streams-bench.js'),
  persister: () => import('./persister-bench.js'),
  'persister-stored': () => import('./stored-bench.js'),
  'persister-gather': () => import('./gather-bench.js'),
  router: () => import('./router-bench.js'),
  e2e: () => import('./e2e-bench.js') as Promise<BenchModule>,
  sliding: () => import('./sliding-bench.js'),
  purge: () => import('./purge-bench.js'),
}

const positiveInt = (value: string): number => {
  const n = Number(value.replace(/_/g, ''))
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive integer')
  return n
}

const program: Command = new Command()
  .name('bench')
  .description('Myelin benchmarks: JSON lines on stdout, progress on stderr')
  .option('--quick', 'smoke run: tiny configurations, one repetition', false)
  .option('--only <names>', `comma-separated modules to run (${Object.keys(modules).join(', ')})`)
  .option('--repeats <n>', 'repetitions of every measurement (default 3, 1 with --quick)', positiveInt)
  .option('--stored <n>', 'events preloaded for the many-stored side of persister-stored (default 1,000,000; 20,000 with --quick)', positiveInt)
  .parse()

const flags = program.opts<{ quick: boolean; only?: string; repeats?: number; stored?: number }>()
const selected = flags.only === undefined ? Object.keys(modules) : flags.only.split(',').map((name) => name.trim()).filter(Boolean)
const unknown = selected.filter((name) => !(name in modules))
if (unknown.length > 0) program.error(`unknown benchmark ${unknown.join(', ')} (known: ${Object.keys(modules).join(', ')})`)

const adminUrl = process.env.MYELIN_TEST_DATABASE_URL
const redisUrl = process.env.MYELIN_TEST_REDIS_URL
if (!adminUrl || !redisUrl) program.error('MYELIN_TEST_DATABASE_URL and MYELIN_TEST_REDIS_URL must be set: run through `make bench`')

const started = performance.now()
const progress = (line: string): void => {
  process.stderr.write(`[bench ${((performance.now() - started) / 1000).toFixed(1).padStart(6)} s] ${line}\n`)
}
const ctx: BenchContext = {
  adminUrl,
  redisUrl,
  quick: flags.quick,
  repeats: flags.repeats ?? (flags.quick ? 1 : 3),
  stored: flags.stored ?? (flags.quick ? 20_000 : 1_000_000),
  progress,
}

const print = (line: object): void => {
  process.stdout.write(`${JSON.stringify(line, (_key, value: unknown) => (typeof value === 'bigint' ? value.toString() : value))}\n`)
}

const machine = await describeMachine(adminUrl, redisUrl)
print(machine)
if (machine.durability.fsync !== 'on') progress(`warning: PostgreSQL runs with fsync=${machine.durability.fsync}; figures are not durable ones`)
let failed = false
const all: BenchResult[] = []
for (const name of selected) {
  const moduleStarted = performance.now()
  progress(`${name}: starting`)
  try {
    const mod = await (modules[name] as () => Promise<BenchModule>)()
    const results: readonly BenchResult[] = await mod.run(ctx)
    for (const result of results) print({ kind: 'result', machine: machine.id, module: name, ...result })
    all.push(...results)
    progress(`${name}: done in ${((performance.now() - moduleStarted) / 1000).toFixed(1)} s`)
  } catch (err) {
    failed = true
    progress(`${name}: FAILED: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`)
    print({ kind: 'error', machine: machine.id, module: name, message: err instanceof Error ? err.message : String(err) })
  }
}
const calibration = flags.quick ? undefined : persisterCalibration(all)
if (calibration !== undefined) {
  const file = fileURLToPath(new URL('results.json', import.meta.url))
  writeFileSync(file, `${JSON.stringify({ machine, persister: calibration }, null, 2)}\n`)
  progress(`persister calibration for \`myelin simulate\` written to ${file}`)
}
progress(`all done in ${((performance.now() - started) / 1000).toFixed(1)} s`)
process.exit(failed ? 1 : 0)

/**
 * The simulator's persister service model from `persister.throughput` with 1,000 rooms (one
 * request per room batch) at batch 1 and 100: the per-room-batch and per-event costs that
 * reproduce both measured throughputs, with the parallelism of the run (32 callers, a pool of
 * 10) and the persister's group commit (room batches ready together share a transaction)
 * folded into them, hence `parallel_efficiency` 0. Undefined when those results are missing.
 */
function persisterCalibration(results: readonly BenchResult[]): Record<string, number | string> | undefined {
  const perS = (batch: number) =>
    (results as readonly (BenchResult & { rooms?: number; batch?: number; eventsPerS?: { median: number } })[]).find(
      (r) => r.benchmark === 'persister.throughput' && r.rooms === 1000 && r.batch === batch,
    )?.eventsPerS?.median
  const one = perS(1)
  const hundred = perS(100)
  if (one === undefined || hundred === undefined || one <= 0 || hundred <= 0) return undefined
  // 1000 / one = fixed + per; 100 * 1000 / hundred = fixed + 100 * per (ms per room batch).
  const per = Math.max(0, (100_000 / hundred - 1000 / one) / 99)
  const fixed = 1000 / one - per
  if (fixed <= 0) return undefined
  return {
    txn_fixed_ms: Math.round(fixed * 10_000) / 10_000,
    per_event_ms: Math.round(per * 10_000) / 10_000,
    parallel_efficiency: 0,
    source: 'make bench: persister.throughput, 1,000 rooms, batch 1 and 100 (32 callers, pool of 10)',
  }
}
