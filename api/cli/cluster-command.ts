import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { UsageError } from './usage-error.js'
import { Command, InvalidArgumentError, Option } from 'commander'
import { stringify as toYaml, parse as parseYaml } from 'yaml'
import { createShardMap } from '../../persisters/shard-map.js'
import { parseConfig } from '../../storage/config.js'
import { createDatabase } from '../../storage/database.js'
import { generateSigningKey } from '../../storage/events/signing.js'
import { pino } from 'pino'
import { createLogger, type Logger } from '../../storage/logger.js'
import { migrateUp } from '../../storage/migrations.js'
import { createRouter, upstreamsFromProcesses } from '../routing/router.js'
import { createSupervisor, type ChildSpec, type ProcessInfo } from '../routing/supervisor.js'
import { startEmbeddedPostgres, type EmbeddedDatabase } from './embedded-postgres.js'
import { freePort } from './ports.js'

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
}

/** The generated deployment: one shared config, one worker file per process. */
export interface ClusterLayout {
  readonly shared: Record<string, unknown>
  readonly workers: readonly { readonly name: string; readonly role: 'persister' | 'api'; readonly config: Record<string, unknown> }[]
}

const here = fileURLToPath(new URL('.', import.meta.url))
const mainScript = join(here, 'main.ts')
const tsxLoader = fileURLToPath(new URL('../../node_modules/tsx/dist/loader.mjs', import.meta.url))

/**
 * The config of a cluster: persisters `persister1..N` (each an event writer serving replication
 * and client sends for the rooms it owns, on a fixed port in `instance_map`), api workers
 * `api1..M` (client API on a port the kernel picks; they report it in their ready line),
 * background tasks on `persister1`.
 *
 * @example
 * clusterLayout({ databaseUrl, persisterPorts: [9001, 9002], apiWorkers: 1, secrets, serverName: 'localhost' })
 */
export function clusterLayout(options: {
  databaseUrl: string
  redisUrl?: string
  persisterPorts: readonly number[]
  apiWorkers: number
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
      config: { worker_name: p.name, worker_app: 'persister', listeners: [{ port: p.port, bind_address: '127.0.0.1', resources: ['client', 'replication', 'metrics', 'health'] }] },
    })),
    ...Array.from({ length: options.apiWorkers }, (_, i) => ({
      name: `api${i + 1}`,
      role: 'api' as const,
      config: { worker_name: `api${i + 1}`, worker_app: 'api', listeners: [{ port: 0, bind_address: '127.0.0.1', resources: ['client', 'metrics', 'health'] }] },
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
 * on `--host:--port` that routes the seed's path table — then prints one line
 * `{"ready":true,"client_url":…,"processes":[{name,role,pid,port}]}`. A crashed child is
 * restarted and the router follows its new port; SIGTERM/SIGINT stop everything.
 */
export function clusterCommand(): Command {
  return new Command('cluster')
    .description('Run a whole Myelin deployment on this machine: PostgreSQL, persisters, api workers and a router.')
    .addOption(new Option('--embedded', 'run the PostgreSQL shipped with Myelin, data in --data').conflicts('database'))
    .option('--database <url>', 'use this PostgreSQL instead (postgres:// URL)')
    .option('--redis <url>', 'Redis for the replication bus (default: Postgres LISTEN/NOTIFY)')
    .option('--data <dir>', 'data folder: embedded PostgreSQL, generated configs and secrets', './data')
    .addOption(new Option('--persisters <n>', 'event persisters').default(2).argParser(count('--persisters', 1, 64)))
    .addOption(new Option('--api-workers <n>', 'client API workers').default(1).argParser(count('--api-workers', 1, 64)))
    .addOption(new Option('--port <port>', 'router port').default(8008).argParser(count('--port', 0, 65535)))
    .option('--host <address>', 'router address', '127.0.0.1')
    .option('--server-name <name>', 'the homeserver name in user and room IDs', 'localhost')
    .addOption(new Option('--log-level <level>', "the processes' log level (info logs every request)").choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).default('info'))
    .action(async (flags: ClusterFlags) => {
      if (!flags.embedded && !flags.database) throw new UsageError('pass --embedded or --database URL')
      // Logs go to stderr: stdout carries only the ready line.
      await runCluster(flags, createLogger({ name: 'cluster' }, pino.destination(2)))
    })
}

function count(flag: string, min: number, max: number) {
  return (value: string): number => {
    const n = Number(value)
    if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`${flag} must be an integer in [${min}, ${max}]`)
    return n
  }
}

async function runCluster(flags: ClusterFlags, log: Logger): Promise<void> {
  const dataDir = resolve(flags.data)
  await mkdir(dataDir, { recursive: true })
  let embedded: EmbeddedDatabase | undefined
  const stopDatabase = async () => {
    await embedded?.stop().catch((err: unknown) => log.warn({ err }, 'stopping the embedded PostgreSQL failed'))
  }
  try {
    embedded = flags.embedded ? await startEmbeddedPostgres(dataDir, log) : undefined
    const databaseUrl = embedded?.url ?? (flags.database as string)
    const migrator = createDatabase({ url: databaseUrl, poolSize: 1, applicationName: 'myelin-cluster' })
    try {
      const { applied } = await migrateUp(migrator.db, { onProgress: (e) => e.kind === 'applied' && log.info({ migration: e.name, ms: e.ms }, 'migration applied') })
      if (applied.length > 0) log.info({ applied: applied.length }, 'schema migrated')
    } finally {
      await migrator.close()
    }

    const layout = clusterLayout({
      databaseUrl,
      ...(flags.redis !== undefined && { redisUrl: flags.redis }),
      persisterPorts: await Promise.all(Array.from({ length: flags.persisters }, () => freePort())),
      apiWorkers: flags.apiWorkers,
      serverName: flags.serverName,
      logLevel: flags.logLevel,
      secrets: await loadOrCreateSecrets(dataDir),
    })
    const config = parseConfig(layout.shared)
    const configDir = join(dataDir, 'config')
    await mkdir(configDir, { recursive: true })
    const sharedFile = join(configDir, 'shared.yaml')
    await writeFile(sharedFile, toYaml(layout.shared), { mode: 0o600 })
    const children: ChildSpec[] = []
    for (const worker of layout.workers) {
      const file = join(configDir, `${worker.name}.yaml`)
      await writeFile(file, toYaml(worker.config))
      children.push({
        name: worker.name,
        role: worker.role,
        command: process.execPath,
        args: ['--import', tsxLoader, mainScript, 'run', '--config', sharedFile, '--config', file, '--supervised'],
      })
    }

    const router = createRouter({
      upstreams: { api: [], persisters: new Map() },
      shardMap: createShardMap({ writers: config.stream_writers?.events ?? [], strategy: config.shard_strategy, pins: config.room_pins }),
      log,
    })
    const supervisor = createSupervisor({
      children,
      log,
      onReady: () => router.setUpstreams(upstreamsFromProcesses(supervisor.processes())),
    })
    let stopping: Promise<void> | undefined
    const stop = (signal: string) => {
      stopping ??= (async () => {
        log.info({ signal }, 'stopping the cluster')
        await router.close().catch(() => {})
        await supervisor.stop()
        await stopDatabase()
        process.exit(0)
      })()
    }
    process.once('SIGTERM', () => stop('SIGTERM'))
    process.once('SIGINT', () => stop('SIGINT'))

    const processes = await supervisor.start()
    router.setUpstreams(upstreamsFromProcesses(processes))
    const bound = await router.listen(flags.port, flags.host)
    const clientUrl = `http://${bound.host.includes(':') ? `[${bound.host}]` : bound.host}:${bound.port}`
    process.stdout.write(`${JSON.stringify({ ready: true, client_url: clientUrl, processes: processes.map(describe) })}\n`)
    log.info({ client_url: clientUrl, config: configDir }, 'cluster ready')
  } catch (err) {
    await stopDatabase()
    throw err
  }
}

function describe(p: ProcessInfo): { name: string; role: string; pid: number | null; port: number | null } {
  return { name: p.name, role: p.role, pid: p.pid, port: p.port }
}
