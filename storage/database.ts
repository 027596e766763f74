import pg from 'pg'
import { Kysely, PostgresDialect } from 'kysely'
import type { Database } from './schema.js'

/** int8 as bigint (positions are bigint in code); everything else as pg's defaults. */
const types = {
  getTypeParser(oid: number, format?: 'text' | 'binary') {
    if (oid === 20 /* int8 */ && format !== 'binary') return (value: string) => BigInt(value)
    return pg.types.getTypeParser(oid, format as 'text')
  },
} as pg.CustomTypesConfig

export interface DatabaseHandle {
  readonly db: Kysely<Database>
  readonly pool: pg.Pool
  close(): Promise<void>
}

/**
 * Opens a connection pool and a kysely instance over it. int8 columns are parsed as `bigint`
 * for this pool only (no global pg type mutation).
 *
 * @example
 * const { db, close } = createDatabase({ url: 'postgres://127.0.0.1/myelin', poolSize: 10 })
 * await db.selectFrom('rooms').selectAll().execute()
 * await close()
 */
export function createDatabase(options: {
  url: string
  poolSize?: number
  applicationName?: string
}): DatabaseHandle {
  const pool = new pg.Pool({
    connectionString: options.url,
    max: options.poolSize ?? 10,
    types,
    application_name: options.applicationName ?? 'myelin',
    connectionTimeoutMillis: 10_000,
    idleTimeoutMillis: 30_000,
  })
  // An idle client losing its connection (database restart) must not crash the process; the
  // pool drops it and the next checkout reconnects.
  pool.on('error', () => {})
  // The same for a checked-out client (for example idle in a transaction when the server goes
  // away): pg emits 'error' on the client, which crashes the process without a listener. The
  // query in flight rejects on its own, and the pool discards the broken client on release.
  pool.on('connect', (client) => client.on('error', () => {}))
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) })
  let closed = false
  return {
    db,
    pool,
    async close() {
      if (closed) return
      closed = true
      await db.destroy()
    },
  }
}
