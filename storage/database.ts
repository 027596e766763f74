import pg from 'pg'
import { Kysely, PostgresDialect } from 'kysely'
import { StorageError } from './errors.js'
import type { Database } from './schema.js'

/** int8 as bigint (positions are bigint in code); everything else as pg's defaults. */
const types = {
  getTypeParser(oid: number, format?: 'text' | 'binary') {
    if (oid === 20 /* int8 */ && format !== 'binary') return (value: string) => BigInt(value)
    return pg.types.getTypeParser(oid, format as 'text')
  },
} as pg.CustomTypesConfig

/**
 * Statements run as named prepared statements: PostgreSQL parses and plans them once per
 * connection, not once per call (on the persist path, parse and plan cost more than running the
 * statement). Only statements with parameters are named (a parameterless text may hold several
 * statements, which the extended protocol refuses), with at most `maxParameters` of them (texts
 * whose parameter count grows with the data, such as long IN lists or multi-row VALUES, would
 * each become a new statement), and at most `maxNamed` texts per process, so a server keeps a
 * bounded set per connection. Texts that select or return `*` of a table are not named: after a
 * migration adds a column, PostgreSQL refuses to run such a prepared statement ("cached plan
 * must not change result type"), which would break running processes during a rolling upgrade.
 */
const preparedStatements = { maxParameters: 64, maxNamed: 1000 }
const statementNames = new Map<string, string>()
/** Texts already found to select or return `*` (bounded like the names), so the test runs once per text. */
const starTexts = new Set<string>()
const selectsStar = /\b(?:select|returning)\s+(?:distinct\s+)?\*|\.\*/i

function statementName(text: string, parameters: number): string | undefined {
  if (parameters === 0 || parameters > preparedStatements.maxParameters) return undefined
  let name = statementNames.get(text)
  if (name !== undefined || starTexts.has(text)) return name
  if (selectsStar.test(text)) {
    if (starTexts.size < preparedStatements.maxNamed) starTexts.add(text)
    return undefined
  }
  if (statementNames.size < preparedStatements.maxNamed) {
    name = `myelin_${statementNames.size + 1}`
    statementNames.set(text, name)
  }
  return name
}

/** Makes `client.query(text, values)` (kysely's call) run `text` as a named prepared statement where `statementName` allows. */
function prepareStatements(client: pg.PoolClient): void {
  const query = client.query.bind(client) as (...args: unknown[]) => unknown
  client.query = ((...args: unknown[]) => {
    const [text, values] = args
    if (args.length === 2 && typeof text === 'string' && Array.isArray(values)) {
      const name = statementName(text, values.length)
      if (name !== undefined) return query({ name, text, values })
    }
    return query(...args)
  }) as typeof client.query
}

export interface DatabaseHandle {
  readonly db: Kysely<Database>
  readonly pool: pg.Pool
  /**
   * Opens one connection now and runs `SELECT 1`: what a command does first, so that a wrong
   * URL is reported as such rather than as the first query's stack.
   *
   * @throws StorageError `ES_UNAVAILABLE` naming the server and database (never the password)
   *   and the reason, e.g. `cannot connect to the database postgres://u@127.0.0.1:5432/myelin:
   *   connect ECONNREFUSED 127.0.0.1:5432 (is PostgreSQL running there?)`.
   */
  checkConnection(): Promise<void>
  close(): Promise<void>
}

/**
 * A database URL without its password (and query string), for messages and logs.
 *
 * @example
 * redactedDatabaseUrl('postgres://u:secret@db:5432/myelin?sslmode=require') // 'postgres://u@db:5432/myelin'
 */
export function redactedDatabaseUrl(url: string): string {
  try {
    const u = new URL(url)
    return `${u.protocol}//${u.username ? `${u.username}@` : ''}${u.host}${u.pathname}`
  } catch {
    return '(an unparsable URL)'
  }
}

const connectionHints: Readonly<Record<string, string>> = {
  ECONNREFUSED: 'is PostgreSQL running there?',
  ENOTFOUND: 'check the host name',
  '28P01': 'check the user name and password',
  '3D000': 'create it, or point the URL at an existing database',
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
  /** Run parameterized statements as named prepared statements (default true); false behind a pooler that cannot keep them (pgbouncer in transaction mode before 1.21). */
  prepareStatements?: boolean
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
  pool.on('connect', (client) => {
    client.on('error', () => {})
    if (options.prepareStatements !== false) prepareStatements(client)
  })
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) })
  let closed = false
  return {
    db,
    pool,
    async checkConnection() {
      try {
        await pool.query('SELECT 1')
      } catch (err) {
        const { code, message } = err as { code?: string; message?: string }
        const hint = code !== undefined ? connectionHints[code] : undefined
        const reason = `${message ?? String(err)}${hint ? ` (${hint})` : ''}`
        throw new StorageError('ES_UNAVAILABLE', `cannot connect to the database ${redactedDatabaseUrl(options.url)}: ${reason}`, { cause: err })
      }
    },
    async close() {
      if (closed) return
      closed = true
      await db.destroy()
    },
  }
}
