import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { createDatabase, type DatabaseHandle } from '../../storage/database.js'
import { migrateUp } from '../../storage/migrations.js'

/** A fresh, migrated database of one benchmark. */
export interface BenchDatabase extends DatabaseHandle {
  readonly name: string
  readonly url: string
  /** Closes the pool and drops the database. */
  drop(): Promise<void>
}

/** Creates fresh databases on one server from a template migrated once per process. */
export interface BenchDatabases {
  /** A new database copied from the migrated template; `label` becomes part of its name. */
  fresh(label: string, options?: { poolSize?: number }): Promise<BenchDatabase>
  /** Drops the template. */
  close(): Promise<void>
}

/**
 * The URL of database `name` on the server of `adminUrl`.
 *
 * @example
 * databaseUrlOn('postgres://postgres@127.0.0.1:5432/postgres', 'bench_1') // 'postgres://postgres@127.0.0.1:5432/bench_1'
 */
export function databaseUrlOn(adminUrl: string, name: string): string {
  const url = new URL(adminUrl)
  url.pathname = `/${name}`
  return url.toString()
}

/**
 * Benchmark databases on the server of `adminUrl` (a superuser URL): migrations run once into a
 * template, and every `fresh` database is a `CREATE DATABASE … TEMPLATE` copy of it.
 *
 * @example
 * const dbs = benchDatabases(ctx.adminUrl)
 * const bench = await dbs.fresh('ids_1w')
 * try { … } finally { await bench.drop(); await dbs.close() }
 */
export function benchDatabases(adminUrl: string): BenchDatabases {
  const template = `myelin_bench_template_${process.pid}`
  let ready: Promise<void> | undefined
  const admin = async <T>(fn: (client: pg.Client) => Promise<T>): Promise<T> => {
    const client = new pg.Client({ connectionString: adminUrl })
    await client.connect()
    try {
      return await fn(client)
    } finally {
      await client.end()
    }
  }
  const ensureTemplate = (): Promise<void> => {
    ready ??= (async () => {
      await admin(async (c) => {
        await c.query(`DROP DATABASE IF EXISTS ${template}`)
        await c.query(`CREATE DATABASE ${template}`)
      })
      const handle = createDatabase({ url: databaseUrlOn(adminUrl, template), poolSize: 1, applicationName: 'myelin-bench' })
      try {
        await migrateUp(handle.db)
      } finally {
        await handle.close()
      }
    })()
    return ready
  }
  return {
    async fresh(label, options = {}) {
      await ensureTemplate()
      const name = `myelin_bench_${label.replace(/[^a-z0-9_]/gi, '_').toLowerCase()}_${randomBytes(3).toString('hex')}`
      await admin((c) => c.query(`CREATE DATABASE ${name} TEMPLATE ${template}`))
      const url = databaseUrlOn(adminUrl, name)
      const handle = createDatabase({ url, poolSize: options.poolSize ?? 10, applicationName: 'myelin-bench' })
      return {
        ...handle,
        name,
        url,
        async drop() {
          await handle.close()
          await admin((c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`))
        },
      }
    },
    async close() {
      if (ready === undefined) return
      await ready.catch(() => undefined)
      await admin((c) => c.query(`DROP DATABASE IF EXISTS ${template}`))
    },
  }
}

/**
 * A plain pg pool for raw-SQL baselines (int8 as strings). Errors of idle clients are ignored:
 * `pool.end()` resolves before its connections are closed, and dropping the database then
 * terminates them.
 *
 * @example
 * const pool = rawPool(db.url, 10)
 * await pool.query('SELECT 1')
 * await pool.end()
 */
export function rawPool(url: string, max: number): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max, application_name: 'myelin-bench-raw' })
  pool.on('error', () => {})
  return pool
}

/**
 * Makes PostgreSQL create `segments` WAL segment files now (a tiny write and `pg_switch_wal()`
 * each, then a checkpoint), so that a benchmark's WAL goes into recycled segments, as on a
 * server that has run for a while, rather than into new ones: a new segment is zero-filled
 * (16 MiB) and synced while commits wait for it, which put the send p99 of every topology's
 * first round 15–20 ms above its later rounds (runs T and U). Returns the WAL files there are
 * after it.
 *
 * @example
 * await preallocateWal(ctx.adminUrl, 64) // 65
 */
export async function preallocateWal(adminUrl: string, segments: number): Promise<number> {
  const client = new pg.Client({ connectionString: adminUrl })
  await client.connect()
  try {
    await client.query('CREATE TABLE IF NOT EXISTS myelin_bench_wal_warmup (i int)')
    for (let i = 0; i < segments; i++) await client.query('INSERT INTO myelin_bench_wal_warmup VALUES (1); SELECT pg_switch_wal()')
    await client.query('DROP TABLE myelin_bench_wal_warmup')
    await client.query('CHECKPOINT')
    const { rows } = await client.query<{ n: string }>('SELECT count(*)::text AS n FROM pg_ls_waldir()')
    return Number(rows[0]?.n ?? 0)
  } finally {
    await client.end()
  }
}
