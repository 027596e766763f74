import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { UsageError } from './usage-error.js'
import { Command, InvalidArgumentError, Option } from 'commander'
import { stringify as toYaml, parse as parseYaml } from 'yaml'
import { z } from 'zod'
import { collectDefaultMetrics, Registry } from 'prom-client'
import { createShardMap } from '../../persisters/shard-map.js'
import { ConfigError, loadConfig, mergeConfigLayers, parseConfig, postgresUrlPattern, readConfigLayers, redisUrlPattern } from '../../storage/config.js'
import { createDatabase } from '../../storage/database.js'
import { generateSigningKey } from '../../storage/events/signing.js'
import { createLogger, logDestination, type Logger } from '../../storage/logger.js'
import { migrateUp } from '../../storage/migrations.js'
import { createRouter } from '../routing/router.js'
import { createSupervisor, formatListeningLine, type ChildSpec, type ProcessInfo } from '../routing/supervisor.js'
import { startEmbeddedPostgres, type EmbeddedDatabase } from './embedded-postgres.js'
import { lockDataDir } from './data-lock.js'
import { freePorts } from './ports.js'
import { stopGracefullyOn } from './run-command.js'

export interface ClusterFlags {
  embedded?: boolean
  database?: string
  redis?: string
  data: string
  persisters: number
  apiWorkers: number
  port: number
  host: string
  serverName: string
  logLevel: string
  /** Operator settings merged into the generated shared config. */
  config?: string[]
}

/** Keys of the shared config that describe the deployment `myelin cluster` builds: its own. */
const clusterOwnedKeys = ['server_name', 'database', 'redis', 'replication_secret', 'signing_key', 'instance_map', 'stream_writers', 'run_background_tasks_on', 'worker_name', 'worker_app', 'listeners'] as const

/** The generated deployment: one shared config, one worker file per process. */
export interface ClusterLayout {
  readonly shared: Record<string, unknown>
  readonly workers: readonly { readonly name: string; readonly role: 'persister' | 'api'; readonly port: number; readonly config: Record<string, unknown> }[]
}

const here = fileURLToPath(new URL('.', import.meta.url))
const mainScript = join(here, 'main.ts')
const tsxLoader = fileURLToPath(new URL('../../node_modules/tsx/dist/loader.mjs', import.meta.url))

/**
 * The config of a cluster: persisters `persister1..N` (each an event writer serving replication
 * and client sends for the rooms it owns, on a fixed port in `instance_map`), api workers
 * `api1..M` (client API on fixed ports too, so the router process finds a restarted worker
 * where it was), background tasks on `persister1`.
 *
 * @example
 * clusterLayout({ databaseUrl, persisterPorts: [9001, 9002], apiPorts: [9011], secrets, serverName: 'localhost' })
 */
export function clusterLayout(options: {
  databaseUrl: string
  redisUrl?: string
  persisterPorts: readonly number[]
  apiPorts: readonly number[]
  serverName: string
  logLevel?: string
  secrets: { replication_secret: string; signing_key: string; registration_shared_secret: string }
}): ClusterLayout {
  const persisters = options.persisterPorts.map((port, i) => ({ name: `persister${i + 1}`, port }))
  const shared = {
    server_name: options.serverName,
    database: { url: options.databaseUrl, pool_size: 10 },
    ...(options.redisUrl !== undefined && { redis: { url: options.redisUrl } }),
    replication_secret: options.secrets.replication_secret,
    signing_key: options.secrets.signing_key,
    registration: { enabled: true, shared_secret: options.secrets.registration_shared_secret },
    instance_map: Object.fromEntries(persisters.map((p) => [p.name, { host: '127.0.0.1', port: p.port }])),
    stream_writers: { events: persisters.map((p) => p.name) },
    run_background_tasks_on: persisters[0]?.name,
    ...(options.logLevel !== undefined && { log_level: options.logLevel }),
  }
  const workers = [
    ...persisters.map((p) => ({
      name: p.name,
      role: 'persister' as const,
      port: p.port,
      config: { worker_name: p.name, worker_app: 'persister', listeners: [{ port: p.port, bind_address: '127.0.0.1', resources: ['client', 'replication', 'metrics', 'health'] }] },
    })),
    ...options.apiPorts.map((port, i) => ({
      name: `api${i + 1}`,
      role: 'api' as const,
      port,
      config: { worker_name: `api${i + 1}`, worker_app: 'api', listeners: [{ port, bind_address: '127.0.0.1', resources: ['client', 'metrics', 'health'] }] },
    })),
  ]
  return { shared, workers }
}

/** Secrets of a data folder: generated once, then reused (the signing key must not change). */
async function loadOrCreateSecrets(dataDir: string): Promise<ClusterLayoutSecrets> {
  const file = join(dataDir, 'secrets.yaml')
  if (existsSync(file)) return parseYaml(await readFile(file, 'utf8')) as ClusterLayoutSecrets
  const secrets = {
    replication_secret: randomBytes(24).toString('base64url'),
    signing_key: generateSigningKey().trim(),
    registration_shared_secret: randomBytes(24).toString('base64url'),
  }
  await writeFile(file, toYaml(secrets), { mode: 0o600 })
  return secrets
}
type ClusterLayoutSecrets = Parameters<typeof clusterLayout>[0]['secrets']

/**
 * `myelin cluster`: starts a whole deployment on one machine — an embedded or given PostgreSQL
 * (migrated), N persisters and M api workers as supervised `myelin run` children, and a router
 * (a supervised `myelin cluster-router` child, role `router`) on `--host:--port` that routes the
 * seed's path table — then prints one line
 * `{"ready":true,"client_url":…,"processes":[{name,role,pid,port}]}`. Every child has a fixed
 * port (`--port 0` picks the router's once), so a crashed child is restarted where clients and
 * the router expect it; SIGTERM/SIGINT stop the router first, then everything else.
 */
export function clusterCommand(): Command {
  return new Command('cluster')
    .description('Run a whole Myelin deployment on this machine: PostgreSQL, persisters, api workers and a router.')
    .addOption(new Option('--embedded', 'run the PostgreSQL shipped with Myelin, data in --data').conflicts('database'))
    .option('--database <url>', 'use this PostgreSQL instead (postgres:// URL)', url('--database', postgresUrlPattern, 'postgres://'))
    .option('--redis <url>', 'Redis for the replication bus (default: Postgres LISTEN/NOTIFY)', url('--redis', redisUrlPattern, 'redis://'))
    .option('--data <dir>', 'data folder: embedded PostgreSQL, generated configs and secrets', './data')
    .addOption(new Option('--persisters <n>', 'event persisters').default(2).argParser(count('--persisters', 1, 64)))
    .addOption(new Option('--api-workers <n>', 'client API workers').default(1).argParser(count('--api-workers', 1, 64)))
    .addOption(new Option('--port <port>', 'router port').default(8008).argParser(count('--port', 0, 65535)))
    .option('--host <address>', 'router address', '127.0.0.1')
    .option('--server-name <name>', 'the homeserver name in user and room IDs', 'localhost')
    .addOption(new Option('--log-level <level>', "the processes' log level (info logs every request)").choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).default('info'))
    .option(
      '--config <file...>',
      "settings merged into the generated shared config (registration, presence, push, persister tuning, …); the deployment's own keys (database, redis, secrets, instance_map, stream_writers, …) come from the flags",
    )
    .action(async (flags: ClusterFlags) => {
      if (!flags.embedded && !flags.database) throw new UsageError('pass --embedded or --database URL')
      // Logs go to stderr: stdout carries only the ready line.
      await runCluster(flags, createLogger({ name: 'cluster' }, logDestination(2)))
    })
}

/**
 * The operator's settings of `files` (merged in order), checked before anything starts: a key the
 * cluster owns is refused (the flags say those), and the settings must make a valid config with
 * a cluster's own keys, every problem listed at once.
 */
async function readOperatorSettings(files: readonly string[], flags: ClusterFlags): Promise<Record<string, unknown>> {
  if (files.length === 0) return {}
  const layers = await readConfigLayers(files)
  const owned = layers.flatMap((layer, i) => clusterOwnedKeys.filter((key) => key in layer).map((key) => `${files[i]}: ${key} is set by myelin cluster itself (use its flags)`))
  const settings = mergeConfigLayers(...layers)
  const placeholder = clusterLayout({
    databaseUrl: 'postgres://127.0.0.1/myelin',
    persisterPorts: Array.from({ length: flags.persisters }, (_, i) => 1 + i),
    apiPorts: [],
    serverName: flags.serverName,
    secrets: { replication_secret: 'x'.repeat(32), signing_key: generateSigningKey().trim(), registration_shared_secret: 'x'.repeat(32) },
  })
  let invalid: string[] = []
  try {
    parseConfig(mergeConfigLayers(placeholder.shared, settings), {})
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    invalid = err.problems
  }
  if (owned.length + invalid.length > 0) throw new ConfigError([...owned, ...invalid])
  return settings
}

function url(flag: string, pattern: RegExp, scheme: string) {
  return (value: string): string => {
    if (!pattern.test(value)) throw new InvalidArgumentError(`${flag} must be a ${scheme} URL`)
    return value
  }
}

function count(flag: string, min: number, max: number) {
  return (value: string): number => {
    const n = Number(value)
    if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`${flag} must be an integer in [${min}, ${max}]`)
    return n
  }
}

async function runCluster(flags: ClusterFlags, log: Logger): Promise<void> {
  const operatorSettings = await readOperatorSettings(flags.config ?? [], flags)
  const dataDir = resolve(flags.data)
  await mkdir(dataDir, { recursive: true })
  const unlock = await lockDataDir(dataDir)
  let embedded: EmbeddedDatabase | undefined
  const stopDatabase = async () => {
    await embedded?.stop().catch((err: unknown) => log.warn({ err }, 'stopping the embedded PostgreSQL failed'))
    await unlock()
  }
  try {
    embedded = flags.embedded ? await startEmbeddedPostgres(dataDir, log) : undefined
    const databaseUrl = embedded?.url ?? (flags.database as string)
    const migrator = createDatabase({ url: databaseUrl, poolSize: 1, applicationName: 'myelin-cluster' })
    try {
      await migrator.checkConnection()
      const { applied } = await migrateUp(migrator.db, { onProgress: (e) => e.kind === 'applied' && log.info({ migration: e.name, ms: e.ms }, 'migration applied') })
      if (applied.length > 0) log.info({ applied: applied.length }, 'schema migrated')
    } finally {
      await migrator.close()
    }

    const ports = await clusterPorts(flags, freePorts)
    const layout = clusterLayout({
      databaseUrl,
      ...(flags.redis !== undefined && { redisUrl: flags.redis }),
      persisterPorts: ports.persisters,
      apiPorts: ports.apiWorkers,
      serverName: flags.serverName,
      logLevel: flags.logLevel,
      secrets: await loadOrCreateSecrets(dataDir),
    })
    const configDir = join(dataDir, 'config')
    await mkdir(configDir, { recursive: true })
    const sharedFile = join(configDir, 'shared.yaml')
    await writeFile(sharedFile, toYaml(mergeConfigLayers(layout.shared, operatorSettings)), { mode: 0o600 })
    const myelin = (...args: string[]) => ({ command: process.execPath, args: ['--import', tsxLoader, mainScript, ...args] })
    const children: ChildSpec[] = []
    for (const worker of layout.workers) {
      const file = join(configDir, `${worker.name}.yaml`)
      await writeFile(file, toYaml(worker.config))
      children.push({ name: worker.name, role: worker.role, ...myelin('run', '--config', sharedFile, '--config', file, '--supervised') })
    }
    // The router is a child like the others (a crash restarts it on the same port) and has
    // fixed upstreams: every worker keeps its port across restarts.
    const routerFile = join(configDir, 'router.yaml')
    const routerLayout: RouterFile = {
      listen: { host: flags.host, port: ports.router },
      metrics: { host: '127.0.0.1', port: ports.routerMetrics },
      upstreams: layout.workers.map((w) => ({ name: w.name, role: w.role, host: '127.0.0.1', port: w.port })),
    }
    await writeFile(routerFile, toYaml(routerLayout))

    const workers = createSupervisor({ children, log })
    const routers = createSupervisor({ children: [{ name: 'router', role: 'router', ...myelin('cluster-router', '--config', sharedFile, '--router', routerFile, '--supervised') }], log })
    let stopping: Promise<void> | undefined
    const stop = (signal: string) => {
      stopping ??= (async () => {
        log.info({ signal }, 'stopping the cluster')
        await routers.stop()
        await workers.stop()
        await stopDatabase()
        process.exit(0)
      })()
    }
    process.once('SIGTERM', () => stop('SIGTERM'))
    process.once('SIGINT', () => stop('SIGINT'))

    const processes = await workers.start()
    try {
      processes.push(...(await routers.start()))
    } catch (err) {
      await workers.stop()
      throw err
    }
    const host = flags.host.includes(':') ? `[${flags.host}]` : flags.host
    const clientUrl = `http://${host}:${processes.at(-1)?.port}`
    process.stdout.write(`${JSON.stringify({ ready: true, client_url: clientUrl, processes: processes.map(describe) })}\n`)
    log.info({ client_url: clientUrl, config: configDir }, 'cluster ready')
  } catch (err) {
    await stopDatabase()
    throw err
  }
}

/** The ports of a cluster's processes: the workers', the router's and its metrics'. */
export interface ClusterPorts {
  readonly persisters: readonly number[]
  readonly apiWorkers: readonly number[]
  readonly router: number
  readonly routerMetrics: number
}

/**
 * Picks every port a cluster needs in one `allocate` call, so no two of them are the same (a port
 * released by one allocation can come back from the next); the router keeps `port` unless it is 0,
 * and no other process gets it.
 *
 * @example
 * await clusterPorts({ persisters: 2, apiWorkers: 1, port: 8008 }, freePorts) // { persisters: [40121, 38877], apiWorkers: [41003], router: 8008, routerMetrics: 39911 }
 */
export async function clusterPorts(
  flags: Pick<ClusterFlags, 'persisters' | 'apiWorkers' | 'port'>,
  allocate: (n: number) => Promise<number[]>,
): Promise<ClusterPorts> {
  const routerPicked = flags.port === 0
  // One spare: a fixed router port inside the kernel's range may come back, and is dropped.
  const ports = (await allocate(flags.persisters + flags.apiWorkers + 2)).filter((port) => port !== flags.port)
  const take = (n: number) => ports.splice(0, n)
  return {
    persisters: take(flags.persisters),
    apiWorkers: take(flags.apiWorkers),
    routerMetrics: take(1)[0] as number,
    router: routerPicked ? (take(1)[0] as number) : flags.port,
  }
}

/** `config/router.yaml` of a cluster: where the router listens, and every worker it routes to. */
const routerFileSchema = z.strictObject({
  listen: z.strictObject({ host: z.string().min(1), port: z.number().int().min(1).max(65535) }),
  /** Where the router serves `/metrics` and `/health` (not on the client port). */
  metrics: z.strictObject({ host: z.string().min(1), port: z.number().int().min(0).max(65535) }).optional(),
  upstreams: z.array(z.strictObject({ name: z.string().min(1), role: z.enum(['persister', 'api']), host: z.string().min(1), port: z.number().int().min(1).max(65535) })),
})
type RouterFile = z.infer<typeof routerFileSchema>

/**
 * `myelin cluster-router --config shared.yaml --router router.yaml [--supervised]` (hidden; the
 * router child of `myelin cluster`): serves the router on `listen`, prints
 * `{"listening":true,"port":N}`, and keeps the supervisor's child contract (SIGTERM or, with
 * `--supervised`, stdin closing: stop accepting, finish requests in flight, exit).
 */
export function clusterRouterCommand(): Command {
  return new Command('cluster-router')
    .description('The router process of `myelin cluster` (started by it).')
    .requiredOption('-c, --config <file>', 'the shared YAML file of the cluster')
    .requiredOption('--router <file>', 'the router file of the cluster (config/router.yaml)')
    .option('--supervised', 'exit when stdin closes (set by `myelin cluster`)')
    .action(async (flags: { config: string; router: string; supervised?: boolean }) => {
      const config = await loadConfig([flags.config])
      const parsed = routerFileSchema.safeParse(parseYaml(await readFile(flags.router, 'utf8')))
      if (!parsed.success) throw new ConfigError(parsed.error.issues.map((i) => `${flags.router}: ${i.path.join('.')}: ${i.message}`))
      const { listen, metrics, upstreams } = parsed.data
      // Logs go to stderr: stdout carries only the listening line.
      const log = createLogger({ level: config.log_level, name: 'router' }, logDestination(2))
      const registry = new Registry()
      registry.setDefaultLabels({ worker: 'router' })
      collectDefaultMetrics({ register: registry })
      const router = createRouter({
        upstreams: {
          api: upstreams.filter((u) => u.role === 'api').map(({ name, host, port }) => ({ name, host, port })),
          persisters: new Map(upstreams.filter((u) => u.role === 'persister').map(({ name, host, port }) => [name, { name, host, port }])),
        },
        shardMap: createShardMap({ writers: config.stream_writers?.events ?? [], strategy: config.shard_strategy, pins: config.room_pins }),
        log,
        registry,
      })
      // Listen first: a router that cannot bind its port exits at once (a held stdin would keep it alive).
      const bound = await router.listen(listen.port, listen.host)
      const metricsServer = metrics === undefined ? undefined : await serveMetrics(registry, metrics.port, metrics.host)
      if (metricsServer !== undefined) log.info({ port: (metricsServer.address() as AddressInfo).port }, 'router metrics listening')
      stopGracefullyOn({
        log,
        close: async () => {
          metricsServer?.close()
          await router.close()
        },
        supervised: flags.supervised === true,
      })
      process.stdout.write(formatListeningLine(bound.port))
    })
}

/** `/metrics` (Prometheus text) and `/health` of `registry` on a plain HTTP server. */
async function serveMetrics(registry: Registry, port: number, host: string): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/metrics') {
      registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
        () => res.writeHead(500).end(),
      )
    } else if (req.method === 'GET' && req.url === '/health') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('OK')
    } else {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}')
    }
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => resolve())
  })
  return server
}

function describe(p: ProcessInfo): { name: string; role: string; pid: number | null; port: number | null } {
  return { name: p.name, role: p.role, pid: p.pid, port: p.port }
}
