import { expect } from 'chai'
import { sql } from 'kysely'
import { createServer, type AddressInfo } from 'node:net'
import { createDatabase } from '../../../storage/database.js'
import { StorageError } from '../../../storage/errors.js'
import { createTestDatabase, type TestDatabase } from '../../support/db.js'

describe('createDatabase (prepared statements)', () => {
  let t: TestDatabase
  beforeEach(async () => {
    t = await createTestDatabase({ empty: true })
  })
  afterEach(async () => {
    await t.drop()
  })

  /** The statements prepared on the pool's one connection. */
  async function prepared(db: ReturnType<typeof createDatabase>['db']): Promise<string[]> {
    const { rows } = await sql<{ statement: string }>`SELECT statement FROM pg_prepared_statements ORDER BY prepare_time`.execute(db)
    return rows.map((r) => r.statement)
  }

  it('should prepare a parameterized statement once per connection and reuse it', async () => {
    const handle = createDatabase({ url: t.url, poolSize: 1 })
    try {
      for (const n of [1, 2, 3]) {
        const { rows } = await sql<{ v: number }>`SELECT ${n}::int + 1 AS v`.execute(handle.db)
        expect(rows[0]?.v).to.equal(n + 1)
      }
      const statements = await prepared(handle.db)
      expect(statements.filter((s) => s.includes('::int + 1'))).to.have.length(1)
    } finally {
      await handle.close()
    }
  })

  it('should not prepare statements with many parameters or none (those may hold several statements)', async () => {
    const handle = createDatabase({ url: t.url, poolSize: 1 })
    try {
      const many = Array.from({ length: 65 }, (_, i) => i)
      const { rows } = await sql<{ n: number }>`SELECT cardinality(ARRAY[${sql.join(many)}]::int[]) AS n`.execute(handle.db)
      expect(rows[0]?.n).to.equal(65)
      await sql`CREATE TABLE two (x int); INSERT INTO two VALUES (1)`.execute(handle.db)
      expect((await sql<{ x: number }>`SELECT x FROM two`.execute(handle.db)).rows).to.deep.equal([{ x: 1 }])
      const statements = await prepared(handle.db)
      expect(statements.some((s) => s.includes('cardinality'))).to.equal(false)
      expect(statements.some((s) => s.includes('CREATE TABLE two'))).to.equal(false)
    } finally {
      await handle.close()
    }
  })

  it('should not prepare a statement that selects or returns * (a later added column would break it)', async () => {
    const handle = createDatabase({ url: t.url, poolSize: 1 })
    try {
      await sql`CREATE TABLE wide (x int)`.execute(handle.db)
      const star = () => sql<{ x: number }>`SELECT * FROM wide WHERE x = ${1}`.execute(handle.db)
      await sql`INSERT INTO wide VALUES (1)`.execute(handle.db)
      expect((await star()).rows).to.deep.equal([{ x: 1 }])
      // What a rolling upgrade does while processes run.
      await sql`ALTER TABLE wide ADD COLUMN y int`.execute(handle.db)
      expect((await star()).rows).to.deep.equal([{ x: 1, y: null }])
      await handle.db.insertInto('wide' as never).values({ x: 2 } as never).returningAll().execute()
      expect((await prepared(handle.db)).filter((s) => s.includes('wide'))).to.deep.equal([])
    } finally {
      await handle.close()
    }
  })

  it('should run every statement unprepared when prepareStatements is false', async () => {
    const handle = createDatabase({ url: t.url, poolSize: 1, prepareStatements: false })
    try {
      await sql`SELECT ${1}::int AS v`.execute(handle.db)
      expect(await prepared(handle.db)).to.deep.equal([])
    } finally {
      await handle.close()
    }
  })

  describe('checkConnection', () => {
    const withPassword = (url: string, name?: string) => {
      const u = new URL(url)
      u.password = 'hunter2-secret'
      if (name !== undefined) u.pathname = `/${name}`
      return u.toString()
    }
    async function failure(url: string): Promise<StorageError> {
      const handle = createDatabase({ url, poolSize: 1 })
      try {
        await handle.checkConnection()
      } catch (err) {
        return err as StorageError
      } finally {
        await handle.close()
      }
      throw new Error('checkConnection resolved')
    }

    it('should resolve against a reachable database', async () => {
      const handle = createDatabase({ url: t.url, poolSize: 1 })
      try {
        await handle.checkConnection()
      } finally {
        await handle.close()
      }
    })

    it('should name the server, the database and the reason of a failure, never the password', async () => {
      const missing = await failure(withPassword(t.url, 'no_such_database_here'))
      expect(missing).to.be.instanceOf(StorageError)
      expect(missing.code).to.equal('ES_UNAVAILABLE')
      expect(missing.message).to.match(/^cannot connect to the database postgres:\/\/[^@]+@127\.0\.0\.1:\d+\/no_such_database_here: /)
      expect(missing.message).to.include('"no_such_database_here" does not exist (create it')
      expect(missing.message).to.not.include('hunter2')

      const server = createServer()
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
      const port = (server.address() as AddressInfo).port
      await new Promise((resolve) => server.close(resolve))
      const refused = await failure(`postgres://someone:hunter2-secret@127.0.0.1:${port}/x`)
      expect(refused.message).to.equal(`cannot connect to the database postgres://someone@127.0.0.1:${port}/x: connect ECONNREFUSED 127.0.0.1:${port} (is PostgreSQL running there?)`)
    })
  })
})
