import { createHash } from 'node:crypto'
import { readdir, readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import path from 'node:path'
import { sql, type Kysely } from 'kysely'
import { Migrator, type Migration, type MigrationProvider } from 'kysely/migration'
import { StorageError } from './errors.js'
import type { Database } from './schema.js'

/**
 * Schema management. Migrations are the numbered SQL files in `migrations/`
 * (`NNNN-what-it-does.sql`), applied in order by kysely's Migrator, all in one transaction, under a
 * Postgres advisory lock: of two concurrent `up` runs one applies, the other waits and then finds
 * nothing pending. Each applied file's SHA-256 is recorded in the same transaction, so `verify`
 * can tell a migration edited after it was applied. Merged migrations are append-only.
 *
 * Compatibility: `SCHEMA_VERSION` is the number of the newest migration this code knows;
 * `SCHEMA_COMPAT_VERSION` is the oldest code schema version that may run against a database this
 * code migrated (raised only by a migration that older code cannot live with). A process refuses
 * to start when migrations are pending, or when the database demands newer code.
 */
export const SCHEMA_VERSION = 32
export const SCHEMA_COMPAT_VERSION = 8

/** The folder of the migrations that ship with this code. */
export const defaultMigrationsDir = fileURLToPath(new URL('../migrations/', import.meta.url))

const migrationTableName = 'myelin_migration'
const migrationLockTableName = 'myelin_migration_lock'
/** Session advisory lock key held around bootstrap + migrate ('myelin' as ASCII). */
const advisoryLockKey = 0x6d79656c696en

export interface MigrationFile {
  /** File name without `.sql`, e.g. `0002-rooms-and-events`; kysely's migration name. */
  name: string
  version: number
  sql: string
  sha256: string
}

/** Progress of `migrateUp`; `index` counts the migration files from 1, of `total`. */
export interface MigrationProgress {
  (event:
    | { kind: 'waiting-for-lock' }
    | { kind: 'applying'; name: string; index: number; total: number }
    | { kind: 'applied'; name: string; index: number; total: number; ms: number }): void
}

/**
 * Reads the migration files of `dir`, sorted by version. Names that do not look like
 * `NNNN-name.sql` or duplicate versions are errors (a typo must not silently skip a file).
 *
 * @example
 * const files = await readMigrationFiles(defaultMigrationsDir)
 * files.at(-1)?.version === SCHEMA_VERSION
 */
export async function readMigrationFiles(dir = defaultMigrationsDir): Promise<MigrationFile[]> {
  const entries = (await readdir(dir)).filter((f) => f.endsWith('.sql')).sort()
  const files: MigrationFile[] = []
  const seen = new Set<number>()
  for (const entry of entries) {
    const match = /^(\d{4})-[a-z0-9-]+\.sql$/.exec(entry)
    if (!match) {
      throw new StorageError('ES_CONFIG_INVALID', `migration file ${entry} is not named NNNN-name.sql`)
    }
    const version = Number(match[1])
    if (seen.has(version)) {
      throw new StorageError('ES_CONFIG_INVALID', `two migration files have version ${match[1]}`)
    }
    seen.add(version)
    const text = await readFile(path.join(dir, entry), 'utf8')
    files.push({
      name: entry.slice(0, -'.sql'.length),
      version,
      sql: text,
      sha256: createHash('sha256').update(text).digest('hex'),
    })
  }
  return files
}

class SqlFileMigrationProvider implements MigrationProvider {
  constructor(
    private readonly files: MigrationFile[],
    private readonly onProgress: MigrationProgress,
  ) {}

  async getMigrations(): Promise<Record<string, Migration>> {
    const migrations: Record<string, Migration> = {}
    const total = this.files.length
    this.files.forEach((file, i) => {
      migrations[file.name] = {
        up: async (db: Kysely<any>) => {
          const started = performance.now()
          this.onProgress({ kind: 'applying', name: file.name, index: i + 1, total })
          // No parameters: pg sends the simple query protocol, so a file may hold many statements.
          await sql.raw(file.sql).execute(db)
          await (db as Kysely<Database>)
            .insertInto('myelin_migration_checksums')
            .values({ name: file.name, sha256: file.sha256, applied_ts: Date.now() })
            .execute()
          this.onProgress({
            kind: 'applied',
            name: file.name,
            index: i + 1,
            total,
            ms: Math.round(performance.now() - started),
          })
        },
      }
    })
    return migrations
  }
}

async function bootstrap(db: Kysely<Database>): Promise<void> {
  await sql`
    CREATE TABLE IF NOT EXISTS myelin_migration_checksums (
      name text PRIMARY KEY,
      sha256 text NOT NULL,
      applied_ts bigint NOT NULL
    )`.execute(db)
  await sql`COMMENT ON TABLE myelin_migration_checksums IS
    'SHA-256 of each migration file as applied; myelin migrate verify compares it with the file.'`.execute(db)
  await sql`
    CREATE TABLE IF NOT EXISTS myelin_schema_compat (
      lock char(1) PRIMARY KEY DEFAULT 'X' CHECK (lock = 'X'),
      compat_version integer NOT NULL
    )`.execute(db)
  await sql`COMMENT ON TABLE myelin_schema_compat IS
    'Single row: the oldest code schema version allowed to run against this database.'`.execute(db)
}

function migratorFor(db: Kysely<Database>, files: MigrationFile[], onProgress: MigrationProgress) {
  return new Migrator({
    db,
    provider: new SqlFileMigrationProvider(files, onProgress),
    migrationTableName,
    migrationLockTableName,
  })
}

export interface MigrateResult {
  applied: string[]
}

/**
 * Applies every pending migration. Safe to run from several processes at once.
 *
 * @example
 * const { applied } = await migrateUp(db, { onProgress: (e) => console.error(e) })
 */
export async function migrateUp(
  db: Kysely<Database>,
  options: { dir?: string; onProgress?: MigrationProgress } = {},
): Promise<MigrateResult> {
  const files = await readMigrationFiles(options.dir)
  const onProgress = options.onProgress ?? (() => {})
  return await db.connection().execute(async (conn) => {
    const got = await sql<{ ok: boolean }>`SELECT pg_try_advisory_lock(${advisoryLockKey}) AS ok`.execute(conn)
    if (!got.rows[0]?.ok) {
      onProgress({ kind: 'waiting-for-lock' })
      await sql`SELECT pg_advisory_lock(${advisoryLockKey})`.execute(conn)
    }
    try {
      await bootstrap(conn)
      const { error, results } = await migratorFor(conn, files, onProgress).migrateToLatest()
      if (error) {
        const failed = results?.find((r) => r.status === 'Error')?.migrationName
        throw new StorageError(
          'ES_SCHEMA_BEHIND',
          `migration ${failed ?? '(setup)'} failed: ${error instanceof Error ? error.message : String(error)}`,
          { cause: error },
        )
      }
      await sql`
        INSERT INTO myelin_schema_compat (lock, compat_version) VALUES ('X', ${SCHEMA_COMPAT_VERSION})
        ON CONFLICT (lock) DO UPDATE
          SET compat_version = GREATEST(myelin_schema_compat.compat_version, EXCLUDED.compat_version)`.execute(conn)
      return { applied: (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName) }
    } finally {
      await sql`SELECT pg_advisory_unlock(${advisoryLockKey})`.execute(conn)
    }
  })
}

export interface MigrationStatusEntry {
  name: string
  state: 'applied' | 'pending' | 'unknown'
  appliedAt?: Date
  /** Set for applied migrations whose file changed since (or whose checksum is missing). */
  drift?: 'edited' | 'no-checksum'
}

export interface SchemaStatus {
  entries: MigrationStatusEntry[]
  pending: string[]
  /** Applied in the database but unknown to this code (a newer Myelin migrated it). */
  unknown: string[]
  edited: string[]
  /** The database's compatibility demand; undefined on a database never migrated. */
  compatVersion: number | undefined
}

/**
 * Compares the database with the migration files: applied, pending, unknown (newer) and edited.
 * Reads only; never creates tables.
 *
 * @example
 * const { pending } = await schemaStatus(db)
 */
export async function schemaStatus(db: Kysely<Database>, options: { dir?: string } = {}): Promise<SchemaStatus> {
  const files = await readMigrationFiles(options.dir)
  const exists = await sql<{ migration: string | null; compat: string | null; checksums: string | null }>`
    SELECT to_regclass(${migrationTableName})::text AS migration,
           to_regclass('myelin_schema_compat')::text AS compat,
           to_regclass('myelin_migration_checksums')::text AS checksums`.execute(db)
  const present = exists.rows[0]
  const applied = new Map<string, Date>()
  if (present?.migration) {
    const rows = await sql<{ name: string; timestamp: string }>`
      SELECT name, timestamp FROM ${sql.table(migrationTableName)} ORDER BY name`.execute(db)
    for (const row of rows.rows) applied.set(row.name, new Date(row.timestamp))
  }
  const checksums = new Map<string, string>()
  if (present?.checksums) {
    const rows = await db.selectFrom('myelin_migration_checksums').select(['name', 'sha256']).execute()
    for (const row of rows) checksums.set(row.name, row.sha256)
  }
  let compatVersion: number | undefined
  if (present?.compat) {
    const row = await db.selectFrom('myelin_schema_compat').select('compat_version').executeTakeFirst()
    compatVersion = row?.compat_version
  }

  const entries: MigrationStatusEntry[] = []
  const known = new Set(files.map((f) => f.name))
  for (const file of files) {
    const appliedAt = applied.get(file.name)
    if (!appliedAt) {
      entries.push({ name: file.name, state: 'pending' })
      continue
    }
    const recorded = checksums.get(file.name)
    const entry: MigrationStatusEntry = { name: file.name, state: 'applied', appliedAt }
    if (recorded === undefined) entry.drift = 'no-checksum'
    else if (recorded !== file.sha256) entry.drift = 'edited'
    entries.push(entry)
  }
  for (const [name, appliedAt] of applied) {
    if (!known.has(name)) entries.push({ name, state: 'unknown', appliedAt })
  }
  return {
    entries,
    pending: entries.filter((e) => e.state === 'pending').map((e) => e.name),
    unknown: entries.filter((e) => e.state === 'unknown').map((e) => e.name),
    edited: entries.filter((e) => e.drift !== undefined).map((e) => e.name),
    compatVersion,
  }
}

/**
 * Refuses (throws) unless this code may run against the database: nothing pending and the
 * database's compatibility demand at most this code's SCHEMA_VERSION. The message is one line
 * that names the command to run. Every process role calls this before doing anything else.
 *
 * @example
 * await assertSchemaCompatible(db) // throws StorageError('ES_SCHEMA_BEHIND', '... run `myelin migrate up`')
 */
export async function assertSchemaCompatible(db: Kysely<Database>, options: { dir?: string } = {}): Promise<void> {
  const status = await schemaStatus(db, options)
  if (status.compatVersion !== undefined && status.compatVersion > SCHEMA_VERSION) {
    throw new StorageError(
      'ES_SCHEMA_AHEAD',
      `database schema needs Myelin code at schema version >= ${status.compatVersion} (this is ${SCHEMA_VERSION}): upgrade Myelin, or restore a matching backup`,
    )
  }
  if (status.pending.length > 0) {
    const what = status.pending.length === status.entries.length ? 'database has no Myelin schema' : `${status.pending.length} migration(s) pending (${status.pending.join(', ')})`
    throw new StorageError('ES_SCHEMA_BEHIND', `${what}: run \`myelin migrate up\` first`)
  }
}
