/**
 * The end-to-end benchmark (issue 7): the load generator (loadgen.ts) against real topologies
 * started with the `myelin` command on a durable PostgreSQL, next to a baseline measured in the
 * same run: the same load generator against a trivial HTTP server on the same machine (the ceiling
 * of the client and HTTP stack alone).
 *
 * Topologies: monolith (`myelin run`, worker_app main); `myelin cluster` with 1 api worker + 2
 * persisters + Redis; 1 api worker + 4 persisters + Redis. Each gets a fresh database.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import Fastify from 'fastify'
import pg from 'pg'
import { preallocateWal } from './bench-db.js'
import { combineRuns, runLoad, type LoadOptions, type LoadResult, type LoadRun } from './loadgen.js'
import { checkE2eGoals, describeGoalChecks, type GoalChecks } from './e2e-goals.js'
import { percentile, ratio, round } from './stats.js'

const myelinBin = fileURLToPath(new URL('../../bin/myelin', import.meta.url))

export interface E2eContext {
  /** Superuser URL of the benchmark PostgreSQL (any database). */
  readonly adminUrl: string
  readonly redisUrl: string
  readonly quick: boolean
  /** Rounds: every topology (and the baseline) runs once per round, rounds one after another. */
  readonly repeats: number
  readonly progress: (line: string) => void
}

export interface E2eResult {
  readonly benchmark: 'e2e'
  readonly topology: string
  readonly distribution: LoadOptions['distribution']
  readonly concurrency: number
  /** The runs together (`combineRuns`): median events/s, latency percentiles over every run's samples. */
  readonly result: LoadResult
  /** Machine CPU time (all processes, load generator included) per event, ms: the runs' median. */
  readonly cpuMsPerEvent: number
  /** Myelin's processes only (router, api workers, persisters), ms per event: the runs' median. */
  readonly myelinCpuMsPerEvent: number
  /** The HTTP-only baseline's events/s: the median of its runs (one per round). */
  readonly baselineEventsPerS: number
  /** events/s of Myelin over the HTTP-only baseline, each the median of its runs. */
  readonly ratio: number
  /** Each run on its own, in round order. */
  readonly runs: readonly E2eRunFigures[]
  /** The goals checked against `result`: only for the topology they are set for (`e2e-goals.ts`). */
  readonly goals?: GoalChecks
}

/** One run's headline figures. */
export interface E2eRunFigures {
  readonly eventsPerS: number
  readonly baselineEventsPerS: number
  readonly sendP99: number
  readonly hotRoomSendP99: number
  readonly syncWakeupP99: number
  readonly cpuMsPerEvent: number
}

/** Total and idle jiffies of the machine (/proc/stat). */
export function machineCpu(): { busy: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] as string
  const fields = line.trim().split(/\s+/).slice(1).map(Number)
  const idle = (fields[3] ?? 0) + (fields[4] ?? 0)
  const total = fields.reduce((a, b) => a + b, 0)
  return { busy: total - idle }
}

/** The fields of `/proc/<pid>/stat` after the command name (state, ppid, …), or undefined once the process is gone. */
export function procStatFields(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  } catch {
    return undefined
  }
}

/** CPU jiffies in user and in system mode. */
export interface CpuTimes {
  readonly user: number
  readonly system: number
}

/** CPU jiffies of a process and its children that exited, in user and system mode; zeros once it is gone. */
export function processTimes(pid: number): CpuTimes {
  const fields = procStatFields(pid)
  return fields === undefined ? { user: 0, system: 0 } : { user: Number(fields[11]), system: Number(fields[12]) }
}

/** CPU jiffies (user + system) of a process and its children that exited; 0 once it is gone. */
export function processCpu(pid: number): number {
  const { user, system } = processTimes(pid)
  return user + system
}

/** Length of a jiffy of /proc/stat (USER_HZ 100 on Linux). */
export const jiffyMs = 10

/** Starts `bin/myelin args` and resolves with the child and the first stdout line `parse` accepts. */
function startMyelin<T>(args: string[], parse: (line: string) => T | undefined, env: Record<string, string> = {}): Promise<{ child: ChildProcess; ready: T }> {
  const child = spawn(myelinBin, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, MYELIN_LOG_LEVEL: 'warn', ...env } })
  const tail: string[] = []
  createInterface({ input: child.stderr! }).on('line', (l) => tail.push(l) > 50 && tail.shift())
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const ready = parse(line)
      if (ready !== undefined) resolve({ child, ready })
    })
    child.once('exit', (code) => reject(new Error(`myelin ${args[0]} exited (${code}):\n${tail.join('\n')}`)))
  })
}

function stopChild(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve()
    child.once('exit', () => resolve())
    child.kill('SIGTERM')
  })
}

function json(line: string): Record<string, unknown> | undefined {
  try {
    return JSON.parse(line) as Record<string, unknown>
  } catch {
    return undefined
  }
}

async function freshDatabase(adminUrl: string, name: string): Promise<string> {
  const admin = new pg.Client({ connectionString: adminUrl })
  await admin.connect()
  try {
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
    await admin.query(`CREATE DATABASE ${name}`)
  } finally {
    await admin.end()
  }
  const url = new URL(adminUrl)
  url.pathname = `/${name}`
  return url.toString()
}

/** A started topology: its client URL, its processes (the supervisor first) and how to stop it. */
export interface Deployment {
  readonly baseUrl: string
  /** Each process by name (`cluster`, `persister1`, …, `api1`, `router`; or `main`). */
  processes(): { readonly name: string; readonly pid: number }[]
  stop(): Promise<void>
}

export interface Topology {
  readonly name: string
  start(databaseUrl: string, dir: string, redisUrl: string): Promise<Deployment>
}

const signingKey = 'ed25519 a_bench l2Fk0rVHqWwUjyHhnAXtOq6SfSBd3YCVLHRYzkl8Znc'

/**
 * Each of the 64 users sends about 45 events a second, far above the default message rate limit
 * (Synapse's `rc_message`, 0.2 a second in bursts of 10): load tests run without it, as
 * Synapse's do.
 */
const noRateLimit = 'rc_message: { per_second: 0 }'

export const monolith: Topology = {
  name: 'monolith',
  async start(databaseUrl, dir) {
    const config = join(dir, 'main.yaml')
    await writeFile(
      config,
      [
        'server_name: bench.local',
        `database: { url: "${databaseUrl}", pool_size: 20 }`,
        'replication_secret: "bench-replication-secret-0123"',
        `signing_key: "${signingKey}"`,
        'log_level: warn',
        noRateLimit,
        'listeners: [{ port: 0, resources: [client, metrics, health] }]',
      ].join('\n'),
    )
    const { child, ready } = await startMyelin(['run', '--config', config], (line) => {
      const j = json(line)
      return j?.listening === true ? (j.port as number) : undefined
    })
    return { baseUrl: `http://127.0.0.1:${ready}`, processes: () => [{ name: 'main', pid: child.pid as number }], stop: () => stopChild(child) }
  },
}

/** `myelin cluster` with 1 api worker, `persisters` persisters and Redis. */
export function cluster(persisters: number): Topology {
  return {
    name: `1 api + ${persisters} persisters + redis`,
    async start(databaseUrl, dir, redisUrl) {
      const settings = join(dir, 'bench.yaml')
      await mkdir(dir, { recursive: true })
      await writeFile(settings, `${noRateLimit}\n`)
      const { child, ready } = await startMyelin(
        ['cluster', '--database', databaseUrl, '--redis', redisUrl, '--persisters', String(persisters), '--api-workers', '1', '--port', '0', '--data', dir, '--server-name', 'bench.local', '--log-level', 'warn', '--config', settings],
        (line) => {
          const j = json(line)
          return j?.ready === true ? (j as { client_url: string; processes: { name: string; pid: number }[] }) : undefined
        },
      )
      const processes = () => [{ name: 'cluster', pid: child.pid as number }, ...ready.processes.map(({ name, pid }) => ({ name, pid }))]
      return { baseUrl: ready.client_url, processes, stop: () => stopChild(child) }
    },
  }
}

/** The baseline: a fastify server answering every request like a send, no storage; `onSend` sees each send it answers, by transaction ID. */
export async function httpBaseline(options: Omit<LoadOptions, 'baseUrl'>, onSend?: (txnId: string) => void): Promise<LoadResult> {
  const app = Fastify()
  let n = 0
  app.post('/_matrix/client/v3/register', async (req) => ({ user_id: `@${(req.body as { username: string }).username}:b`, access_token: `t${n++}` }))
  app.post('/_matrix/client/v3/createRoom', async () => ({ room_id: `!r${n++}:b` }))
  app.post('/_matrix/client/v3/join/:room', async (req) => ({ room_id: (req.params as { room: string }).room }))
  app.put('/_matrix/client/v3/rooms/:room/send/:type/:txn', async (req) => {
    onSend?.((req.params as { txn: string }).txn)
    return { event_id: `$e${n++}` }
  })
  const recent: string[] = []
  app.addHook('onSend', async (req, _reply, payload) => {
    if (req.method === 'PUT' && typeof payload === 'string') recent.push(JSON.parse(payload).event_id as string)
    return payload
  })
  app.get('/_matrix/client/v3/sync', async (req) => {
    const since = (req.query as { since?: string }).since
    if (since === undefined) return { next_batch: '0' }
    for (let waited = 0; recent.length === 0 && waited < 5000; waited += 5) await new Promise((r) => setTimeout(r, 5))
    const events = recent.splice(0).map((event_id) => ({ event_id }))
    return { next_batch: String(n), rooms: { join: Object.fromEntries([...probeRooms].map((r) => [r, { timeline: { events } }])) } }
  })
  const probeRooms = new Set<string>()
  app.addHook('onSend', async (req, _reply, payload) => {
    if (req.url.endsWith('/createRoom') && typeof payload === 'string') probeRooms.add(JSON.parse(payload).room_id as string)
    return payload
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  const port = typeof address === 'object' && address !== null ? address.port : 0
  try {
    return await runLoad({ ...options, baseUrl: `http://127.0.0.1:${port}` })
  } finally {
    await app.close()
  }
}

/**
 * Runs every topology at C=64 with Zipf-skewed rooms (one room ≈ 27% of traffic), the
 * 2-persister topology also uniformly, each next to the HTTP baseline, in `repeats` rounds (so
 * a slow phase of a noisy machine hits every topology alike, not one), and reports each
 * topology's runs together.
 */
export async function run(ctx: E2eContext): Promise<E2eResult[]> {
  const durationS = ctx.quick ? 4 : 20
  const load = { users: 64, rooms: ctx.quick ? 8 : 32, concurrency: 64, warmupS: ctx.quick ? 2 : 10, durationS, progress: ctx.progress }
  // `goals`: the topology the goals are set for (1 api + 2 persisters, Zipf, C = 64).
  const plans: { topology: Topology; distribution: LoadOptions['distribution']; goals?: true }[] = ctx.quick
    ? [{ topology: cluster(2), distribution: 'zipf', goals: true }]
    : [
        { topology: monolith, distribution: 'zipf' },
        { topology: cluster(2), distribution: 'zipf', goals: true },
        { topology: cluster(2), distribution: 'uniform' },
        { topology: cluster(4), distribution: 'zipf' },
      ]
  const rounds = Math.max(1, ctx.repeats)
  if (!ctx.quick) {
    // Since run V: the first round writes into recycled WAL segments, as the later ones do.
    ctx.progress('e2e: preallocating 1 GiB of WAL segments (a long-running server recycles its own)')
    ctx.progress(`e2e: ${await preallocateWal(ctx.adminUrl, 64)} WAL files`)
  }
  const baselines: number[] = []
  const measured = plans.map(() => [] as { load: LoadRun; cpuMsPerEvent: number; myelinCpuMsPerEvent: number; baselineEventsPerS: number }[])
  for (let round = 1; round <= rounds; round++) {
    const of = `round ${round}/${rounds}`
    ctx.progress(`e2e ${of}: HTTP-only baseline`)
    const baseline = (await httpBaseline({ ...load, distribution: 'zipf' })).eventsPerS
    baselines.push(baseline)
    for (const [i, plan] of plans.entries()) {
      ctx.progress(`e2e ${of} [${i + 1}/${plans.length}]: ${plan.topology.name}, ${plan.distribution}, C=${load.concurrency}, ${load.warmupS} s warm-up + ${durationS} s`)
      measured[i]?.push({ ...(await measureTopology(ctx.adminUrl, ctx.redisUrl, plan, load, `myelin_e2e_${i}`)), baselineEventsPerS: baseline })
    }
  }
  const baselineEventsPerS = percentile(baselines, 50)
  return plans.map((plan, i) => {
    const runs = measured[i] ?? []
    const result = combineRuns(runs.map((r) => r.load))
    const goals = plan.goals === true ? checkE2eGoals(result) : undefined
    if (goals !== undefined) ctx.progress(`e2e goals (${plan.topology.name}, ${plan.distribution}, C=${load.concurrency}): ${describeGoalChecks(goals)}`)
    return {
      benchmark: 'e2e',
      topology: plan.topology.name,
      distribution: plan.distribution,
      concurrency: load.concurrency,
      result,
      cpuMsPerEvent: percentile(runs.map((r) => r.cpuMsPerEvent), 50),
      myelinCpuMsPerEvent: percentile(runs.map((r) => r.myelinCpuMsPerEvent), 50),
      baselineEventsPerS,
      ratio: ratio(result.eventsPerS, baselineEventsPerS),
      runs: runs.map((r) => ({
        eventsPerS: r.load.eventsPerS,
        baselineEventsPerS: r.baselineEventsPerS,
        sendP99: r.load.sendMs.p99,
        hotRoomSendP99: r.load.hotRoomSendMs.p99,
        syncWakeupP99: r.load.syncWakeupMs.p99,
        cpuMsPerEvent: r.cpuMsPerEvent,
      })),
      ...(goals === undefined ? {} : { goals }),
    }
  })
}

/** One run of `plan` on a fresh, migrated database, with the CPU it took per event. */
async function measureTopology(
  adminUrl: string,
  redisUrl: string,
  plan: { readonly topology: Topology; readonly distribution: LoadOptions['distribution'] },
  load: Omit<LoadOptions, 'baseUrl' | 'distribution'>,
  databaseName: string,
): Promise<{ load: LoadRun; cpuMsPerEvent: number; myelinCpuMsPerEvent: number }> {
  const deployment = await startOnFreshDatabase(adminUrl, redisUrl, plan.topology, databaseName)
  try {
    const pids = deployment.processes().map((p) => p.pid)
    const ownCpu = () => pids.reduce((sum, pid) => sum + processCpu(pid), 0)
    // CPU over the counted load: from the end of the warm-up to the end of the load.
    let cpu0 = machineCpu().busy
    let own0 = ownCpu()
    let cpu1 = cpu0
    let own1 = own0
    const onMeasureStart = () => {
      cpu0 = machineCpu().busy
      own0 = ownCpu()
    }
    const onLoadEnd = () => {
      cpu1 = machineCpu().busy
      own1 = ownCpu()
    }
    const result = await runLoad({ ...load, baseUrl: deployment.baseUrl, distribution: plan.distribution, onMeasureStart, onLoadEnd })
    const events = Math.max(1, result.events)
    return {
      load: result,
      cpuMsPerEvent: round(((cpu1 - cpu0) * jiffyMs) / events, 3),
      myelinCpuMsPerEvent: round(((own1 - own0) * jiffyMs) / events, 3),
    }
  } finally {
    await deployment.stop()
  }
}

/**
 * Starts `topology` with the `myelin` command on a fresh, migrated database `databaseName`;
 * `stop()` stops it and removes its data directory.
 */
export async function startOnFreshDatabase(
  adminUrl: string,
  redisUrl: string,
  topology: Topology,
  databaseName: string,
): Promise<Deployment> {
  const dir = await mkdtemp(join(tmpdir(), 'myelin-e2e-'))
  const databaseUrl = await freshDatabase(adminUrl, databaseName)
  await new Promise<void>((resolve, reject) => {
    const m = spawn(myelinBin, ['migrate', 'up', '--database', databaseUrl], { stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    m.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    m.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`migrate exited ${code}: ${stderr.slice(-2000)}`))))
  })
  const deployment = await topology.start(databaseUrl, dir, redisUrl).catch(async (err: unknown) => {
    await rm(dir, { recursive: true, force: true })
    throw err
  })
  return {
    ...deployment,
    async stop() {
      await deployment.stop()
      await rm(dir, { recursive: true, force: true })
    },
  }
}
