import { expect } from 'chai'
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { defaultMigrationsDir, readMigrationFiles } from '../../../storage/migrations.js'
import { createTestDatabase, type TestDatabase } from '../../support/db.js'
import { runMyelin } from '../../support/cli.js'

describe('myelin migrate (the CLI against a real PostgreSQL)', function () {
  this.timeout(60_000)
  let t: TestDatabase
  let total: number

  beforeEach(async () => {
    t = await createTestDatabase({ empty: true })
    total = (await readMigrationFiles()).length
  })
  afterEach(async () => {
    await t.drop()
  })

  it('should apply every migration with progress, then find nothing to apply the second time', async () => {
    const first = await runMyelin(['migrate', 'up', '--database', t.url])
    expect(first.code, first.stderr).to.equal(0)
    expect(first.stdout).to.include(`applied ${total} migration(s)`)
    expect(first.stderr.match(/^\[\d+\/\d+\] applied /gm)).to.have.length(total)
    // Counted from 1: the first file is [1/N], the last [N/N].
    const counters = [...first.stderr.matchAll(/^\[(\d+)\/(\d+)\] applied /gm)].map((m) => `${m[1]}/${m[2]}`)
    expect(counters).to.deep.equal(Array.from({ length: total }, (_, i) => `${i + 1}/${total}`))
    const second = await runMyelin(['migrate', 'up', '--database', t.url])
    expect(second.code).to.equal(0)
    expect(second.stdout).to.include('nothing to apply')
    const status = await runMyelin(['migrate', 'status', '--database', t.url])
    expect(status.stdout).to.include(`${total} applied, 0 pending`)
  })

  it('should let two concurrent `up` runs apply each migration exactly once', async () => {
    const [a, b] = await Promise.all([runMyelin(['migrate', 'up', '--database', t.url]), runMyelin(['migrate', 'up', '--database', t.url])])
    expect([a.code, b.code]).to.deep.equal([0, 0])
    const applied = [a, b].map((r) => /applied (\d+) migration/.exec(r.stdout)?.[1] ?? '0').map(Number)
    expect(applied.reduce((x, y) => x + y)).to.equal(total)
    const { rows } = await t.pool.query('SELECT name, count(*)::int AS n FROM myelin_migration GROUP BY name')
    expect(rows).to.have.length(total)
    expect(rows.every((r: { n: number }) => r.n === 1)).to.equal(true)
  })

  it('should report a migration edited after it was applied, and exit non-zero', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'myelin-migrations-'))
    try {
      await cp(defaultMigrationsDir, dir, { recursive: true })
      expect((await runMyelin(['migrate', 'up', '--database', t.url, '--migrations', dir])).code).to.equal(0)
      const ok = await runMyelin(['migrate', 'verify', '--database', t.url, '--migrations', dir])
      expect(ok.code, ok.stderr).to.equal(0)
      const victim = join(dir, '0003-accounts.sql')
      await writeFile(victim, `${await readFile(victim, 'utf8')}\n-- edited later\n`)
      const verify = await runMyelin(['migrate', 'verify', '--database', t.url, '--migrations', dir])
      expect(verify.code).to.equal(1)
      expect(verify.stderr).to.include('edited after it was applied: 0003-accounts')
      const status = await runMyelin(['migrate', 'status', '--database', t.url, '--migrations', dir])
      expect(status.stdout).to.match(/applied +0003-accounts .*\(edited\)/)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('should refuse to run a process against a database with pending migrations, naming the command', async () => {
    const config = join(await mkdtemp(join(tmpdir(), 'myelin-config-')), 'shared.yaml')
    await writeFile(
      config,
      [`server_name: localhost`, `database: { url: "${t.url}" }`, `replication_secret: "0123456789abcdef0123"`, `signing_key: "ed25519 a1 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="`].join('\n'),
    )
    const run = await runMyelin(['run', '--config', config])
    expect(run.code).to.equal(1)
    const lines = run.stderr.trim().split('\n')
    expect(lines).to.have.length(1)
    expect(lines[0]).to.include('run `myelin migrate up`')
  })

  it('should say how to name a database when none is given, or one that is not a postgres:// URL, and exit 2', async () => {
    const none = await runMyelin(['migrate', 'up'], { env: { MYELIN_DATABASE_URL: '' } })
    expect([none.code, none.stderr]).to.deep.equal([2, 'myelin: no database: pass --database URL, --config FILE or set MYELIN_DATABASE_URL\n'])
    const flag = await runMyelin(['migrate', 'status', '--database', 'notaurl'])
    expect([flag.code, flag.stderr]).to.deep.equal([2, 'myelin: --database must be a postgres:// URL\n'])
    const env = await runMyelin(['migrate', 'up'], { env: { MYELIN_DATABASE_URL: 'mysql://x@y/z' } })
    expect([env.code, env.stderr]).to.deep.equal([2, 'myelin: MYELIN_DATABASE_URL must be a postgres:// URL\n'])
  })

  it('should say which database it cannot reach and why, in one line without the password, and exit 1', async () => {
    const res = await runMyelin(['migrate', 'up', '--database', 'postgres://someone:hunter2-secret@127.0.0.1:1/myelin'])
    expect(res.code).to.equal(1)
    expect(res.stderr).to.equal('myelin: cannot connect to the database postgres://someone@127.0.0.1:1/myelin: connect ECONNREFUSED 127.0.0.1:1 (is PostgreSQL running there?)\n')
  })
})
