import { randomBytes } from 'node:crypto'
import { cp, mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Kysely } from 'kysely'
import pg from 'pg'
import { createDatabase, type DatabaseHandle } from '../../storage/database.js'
import { defaultMigrationsDir, migrateUp } from '../../storage/migrations.js'
import type { Database } from '../../storage/schema.js'

/**
 * Real PostgreSQL for tests. `make test` (scripts/test-services.sh) starts a throwaway server and
 * exports MYELIN_TEST_DATABASE_URL (superuser, `postgres` database). Migrations run once into a
 * template database; each test database is a fast `CREATE DATABASE ... TEMPLATE` copy of it.
 */
export function adminUrl(): string {
  const url = process.env.MYELIN_TEST_DATABASE_URL
  if (!url) throw new Error('MYELIN_TEST_DATABASE_URL is not set: run the tests through `make test`')
  return url
}

export function redisUrl(): string {
  const url = process.env.MYELIN_TEST_REDIS_URL
  if (!url) throw new Error('MYELIN_TEST_REDIS_URL is not set: run the tests through `make test`')
  return url
}

/** URL of a database on the test server. */
export function databaseUrl(name: string): string {
  const url = new URL(adminUrl())
  url.pathname = `/${name}`
  return url.toString()
}

const templateName = `myelin_template_${process.pid}`
let templateReady: Promise<void> | undefined

/** Runs `fn` on a fresh connection to the server's admin database (a superuser), closed after. */
export async function withAdmin<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: adminUrl() })
  await client.connect()
  try {
    return await fn(client)
  } finally {
    await client.end()
  }
}

function ensureTemplate(): Promise<void> {
  templateReady ??= (async () => {
    await withAdmin(async (c) => {
      await c.query(`DROP DATABASE IF EXISTS ${templateName}`)
      await c.query(`CREATE DATABASE ${templateName}`)
    })
    const handle = createDatabase({ url: databaseUrl(templateName), poolSize: 2 })
    try {
      await migrateUp(handle.db)
    } finally {
      await handle.close()
    }
  })()
  return templateReady
}

export interface TestDatabase extends DatabaseHandle {
  readonly name: string
  readonly url: string
  /** Closes the pool and drops the database. */
  drop(): Promise<void>
}

/**
 * A fresh database for one test: migrated (copy of the template) unless `empty` is set.
 *
 * @example
 * let t: TestDatabase
 * beforeEach(async () => { t = await createTestDatabase() })
 * afterEach(() => t.drop())
 */
export async function createTestDatabase(options: { empty?: boolean; poolSize?: number } = {}): Promise<TestDatabase> {
  const name = `myelin_test_${randomBytes(6).toString('hex')}`
  if (!options.empty) await ensureTemplate()
  await withAdmin((c) => c.query(options.empty ? `CREATE DATABASE ${name}` : `CREATE DATABASE ${name} TEMPLATE ${templateName}`))
  const url = databaseUrl(name)
  const handle = createDatabase({ url, poolSize: options.poolSize ?? 10 })
  return {
    ...handle,
    name,
    url,
    async drop() {
      await handle.close()
      await withAdmin((c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`))
    },
  }
}

/**
 * `db` with a count of the queries answered through it (reads of a code path, to check that it
 * skips what it need not read).
 *
 * @example
 * const counted = countingQueries(t.db)
 * await accountDataChanges(counted.db, userId, { after: 5n, upTo: 5n })
 * counted.queries // 0
 */
export function countingQueries(db: Kysely<Database>): { readonly db: Kysely<Database>; queries: number } {
  const counter = {
    queries: 0,
    // Counted as answered: a builder used as a subquery is transformed too, but not executed.
    db: db.withPlugin({
      transformQuery: (args) => args.node,
      transformResult: async (args) => {
        counter.queries += 1
        return args.result
      },
    }),
  }
  return counter
}

export interface OlderMigrations {
  readonly dir: string
  remove(): Promise<void>
}

/**
 * A folder with the shipped migrations numbered below `before`: migrating an empty test
 * database with it leaves the schema an older release had, to test a data migration on.
 *
 * @example
 * const older = await olderMigrations('0033')
 * await migrateUp(t.db, { dir: older.dir }) // schema 32
 * await older.remove()
 */
export async function olderMigrations(before: string): Promise<OlderMigrations> {
  const dir = await mkdtemp(join(tmpdir(), `myelin-migrations-before-${before}-`))
  for (const file of (await readdir(defaultMigrationsDir)).filter((f) => f.endsWith('.sql') && f < before)) {
    await cp(join(defaultMigrationsDir, file), join(dir, file))
  }
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) }
}
