/**
 * Where the CPU goes: one topology of the e2e benchmark under its load, with the CPU of every
 * process split per event sent — each Myelin process, PostgreSQL's backends by the process
 * that opened them (`application_name`), PostgreSQL's own processes, Redis and this load
 * generator — and, with `--waits`, what PostgreSQL's backends were doing, sampled from
 * `pg_stat_activity` every 50 ms. Each process's share of kernel time (`systemShare`). Also the
 * WAL it wrote per event (records, full-page images, bytes) and the checkpoints during the count.
 * Prints one JSON object on stdout; progress on stderr.
 * Not part of `make bench`: a tool for finding the next thing to fix (RESULTS.md quotes it).
 *
 * @example
 * MYELIN_PG_DURABLE=1 scripts/test-services.sh node --import tsx scripts/bench/profile.ts --waits
 * scripts/test-services.sh node --import tsx scripts/bench/profile.ts --topology monolith --duration 10
 */
import { readdirSync, readFileSync } from 'node:fs'
import { Command, InvalidArgumentError, Option } from 'commander'
import pg from 'pg'
import { cluster, jiffyMs, machineCpu, monolith, procStatFields, processTimes, startOnFreshDatabase, type CpuTimes } from './e2e-bench.js'
import { runLoad } from './loadgen.js'
import { round } from './stats.js'

const seconds = (value: string): number => {
  const n = Number(value)
  if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError('expected a number of seconds')
  return n
}

const flags = new Command()
  .name('profile')
  .description('CPU per event of every process of one e2e topology under load (JSON on stdout)')
  .addOption(new Option('--topology <kind>', 'what to start').choices(['cluster', 'monolith']).default('cluster'))
  .option('--persisters <n>', 'persisters of the cluster', (v) => Number.parseInt(v, 10), 2)
  .addOption(new Option('--distribution <d>', 'how senders pick rooms').choices(['zipf', 'uniform']).default('zipf'))
  .option('--concurrency <n>', 'closed-loop senders', (v) => Number.parseInt(v, 10), 64)
  .option('--warmup <s>', 'seconds of load before counting', seconds, 10)
  .option('--duration <s>', 'seconds of load counted', seconds, 15)
  .option('--waits', "sample pg_stat_activity every 50 ms while counting", false)
  .parse()
  .opts<{ topology: 'cluster' | 'monolith'; persisters: number; distribution: 'zipf' | 'uniform'; concurrency: number; warmup: number; duration: number; waits: boolean }>()

const adminUrl = process.env.MYELIN_TEST_DATABASE_URL
const redisUrl = process.env.MYELIN_TEST_REDIS_URL
const pgdata = process.env.MYELIN_TEST_PGDATA
if (!adminUrl || !redisUrl || !pgdata) throw new Error('run through scripts/test-services.sh (MYELIN_TEST_DATABASE_URL, _REDIS_URL, _PGDATA)')
const progress = (line: string) => process.stderr.write(`[profile] ${line}\n`)

/** Direct children of `parent` (PostgreSQL's backends and auxiliary processes). */
function childrenOf(parent: number): number[] {
  const out: number[] = []
  for (const entry of readdirSync('/proc')) {
    if (/^\d+$/.test(entry) && Number(procStatFields(Number(entry))?.[1]) === parent) out.push(Number(entry))
  }
  return out
}

function pidOf(pattern: RegExp): number | undefined {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      if (pattern.test(readFileSync(`/proc/${entry}/cmdline`, 'utf8').replaceAll('\0', ' '))) return Number(entry)
    } catch {
      // gone meanwhile
    }
  }
  return undefined
}

const topology = flags.topology === 'monolith' ? monolith : cluster(flags.persisters)
const database = 'myelin_profile'
progress(`starting ${topology.name} on a fresh database`)
const deployment = await startOnFreshDatabase(adminUrl, redisUrl, topology, database)
const postmaster = Number(readFileSync(`${pgdata}/postmaster.pid`, 'utf8').split('\n')[0])
const redisPid = pidOf(new RegExp(`redis-server .*:${new URL(redisUrl).port}`))
const admin = new pg.Client({ connectionString: adminUrl })
await admin.connect()

/** Who each PostgreSQL process works for: its `application_name`, or its backend type. */
async function backendOwners(): Promise<Map<number, string>> {
  const { rows } = await admin.query<{ pid: number; owner: string }>(
    `SELECT pid, CASE WHEN application_name <> '' THEN application_name ELSE coalesce(backend_type, 'other') END AS owner FROM pg_stat_activity`,
  )
  return new Map(rows.map((r) => [r.pid, r.owner]))
}

/** CPU jiffies of every process counted, user and system, by a key `label` names once every backend is known. */
function snapshot(): Map<string, CpuTimes> {
  const byKey = new Map<string, CpuTimes>()
  for (const { name, pid } of deployment.processes()) byKey.set(`myelin ${name}`, processTimes(pid))
  for (const pid of childrenOf(postmaster)) byKey.set(`pg ${pid}`, processTimes(pid))
  byKey.set('postgres postmaster', processTimes(postmaster))
  if (redisPid !== undefined) byKey.set('redis', processTimes(redisPid))
  const own = process.cpuUsage()
  byKey.set('load generator', { user: own.user / 1000 / jiffyMs, system: own.system / 1000 / jiffyMs })
  return byKey
}

/** A PostgreSQL process's key becomes `postgres <application_name or backend type>`. */
const label = (key: string, owners: Map<number, string>) =>
  key.startsWith('pg ') ? `postgres ${owners.get(Number(key.slice(3))) ?? 'exited'}` : key

const waits = new Map<string, number>()
let samples = 0
let sampler: NodeJS.Timeout | undefined
/** Whether the sampler re-arms: a sample in flight when the load ends must not start another. */
let sampling = false
/** The latest sample, awaited before the admin connection closes. */
let lastSample: Promise<void> = Promise.resolve()
const sample = async () => {
  const { rows } = await admin.query<{ what: string }>(
    `SELECT CASE WHEN state = 'active' THEN coalesce(wait_event_type || ':' || wait_event, 'CPU') ELSE state END
              || ' ' || application_name || ' ' || left(regexp_replace(query, '\\s+', ' ', 'g'), 48) AS what
       FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid() AND state <> 'idle'`,
    [database],
  )
  samples++
  for (const { what } of rows) waits.set(what, (waits.get(what) ?? 0) + 1)
}

interface WalCounters {
  records: number
  fpi: number
  bytes: number
  checkpoints: number
}

/** PostgreSQL's WAL counters (pg_stat_wal) and checkpoints so far (pg_stat_bgwriter). */
async function walCounters(): Promise<WalCounters> {
  const { rows } = await admin.query<{ records: string; fpi: string; bytes: string; checkpoints: string }>(
    `SELECT wal_records AS records, wal_fpi AS fpi, wal_bytes AS bytes,
            (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter) AS checkpoints FROM pg_stat_wal`,
  )
  const row = rows[0] as { records: string; fpi: string; bytes: string; checkpoints: string }
  return { records: Number(row.records), fpi: Number(row.fpi), bytes: Number(row.bytes), checkpoints: Number(row.checkpoints) }
}

let wal0: Promise<WalCounters> | undefined
let wal1: Promise<WalCounters> | undefined
let before = new Map<string, CpuTimes>()
let after = new Map<string, CpuTimes>()
let machine0 = 0
let machine1 = 0
try {
  const result = await runLoad({
    baseUrl: deployment.baseUrl,
    users: 64,
    rooms: 32,
    concurrency: flags.concurrency,
    distribution: flags.distribution,
    warmupS: flags.warmup,
    durationS: flags.duration,
    idleS: 0,
    progress,
    onMeasureStart: () => {
      before = snapshot()
      wal0 = walCounters()
      machine0 = machineCpu().busy
      if (flags.waits) {
        sampling = true
        const tick = () => {
          lastSample = sample()
            .catch((err: unknown) => {
              progress(`pg_stat_activity sample failed: ${String(err)}`)
            })
            .finally(() => {
              if (sampling) sampler = setTimeout(tick, 50)
            })
        }
        tick()
      }
    },
    onLoadEnd: () => {
      sampling = false
      clearTimeout(sampler)
      after = snapshot()
      wal1 = walCounters()
      machine1 = machineCpu().busy
    },
  })
  const owners = await backendOwners()
  const events = Math.max(1, result.events)
  const perEvent = (jiffies: number) => round((jiffies * jiffyMs) / events, 4)
  const jiffiesBy = new Map<string, CpuTimes>()
  for (const [key, end] of after) {
    const name = label(key, owners)
    const start = before.get(key) ?? { user: 0, system: 0 }
    const sum = jiffiesBy.get(name) ?? { user: 0, system: 0 }
    jiffiesBy.set(name, { user: sum.user + end.user - start.user, system: sum.system + end.system - start.system })
  }
  const split = [...jiffiesBy.entries()]
    .map(([name, { user, system }]) => [name, perEvent(user + system), user + system > 0 ? round(system / (user + system), 2) : 0] as const)
    .filter(([, ms]) => ms > 0)
    .sort((a, b) => b[1] - a[1])
  const [w0, w1] = await Promise.all([wal0, wal1])
  const wal =
    w0 === undefined || w1 === undefined
      ? undefined
      : {
          recordsPerEvent: round((w1.records - w0.records) / events, 2),
          fullPageImagesPerEvent: round((w1.fpi - w0.fpi) / events, 3),
          bytesPerEvent: Math.round((w1.bytes - w0.bytes) / events),
          checkpoints: w1.checkpoints - w0.checkpoints,
        }
  const top = [...waits.entries()].sort((a, b) => b[1] - a[1]).slice(0, 25)
  process.stdout.write(
    `${JSON.stringify(
      {
        topology: topology.name,
        distribution: flags.distribution,
        concurrency: flags.concurrency,
        eventsPerS: result.eventsPerS,
        sendMs: result.sendMs,
        syncWakeupMs: result.syncWakeupMs,
        errors: result.errors,
        machineCpuMsPerEvent: perEvent(machine1 - machine0),
        cpuMsPerEvent: Object.fromEntries(split.map(([name, ms]) => [name, ms])),
        systemShare: Object.fromEntries(split.map(([name, , share]) => [name, share])),
        wal,
        ...(flags.waits ? { pgActivitySamples: samples, pgActivity: Object.fromEntries(top) } : {}),
      },
      null,
      2,
    )}\n`,
  )
} finally {
  sampling = false
  clearTimeout(sampler)
  await lastSample
  await admin.end()
  await deployment.stop()
}
