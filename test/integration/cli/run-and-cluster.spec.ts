import { spawn } from 'node:child_process'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { createServer, type AddressInfo } from 'node:net'
import { createInterface } from 'node:readline'
import { expect } from 'chai'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { parse as parseYaml } from 'yaml'
import { alive } from '../../../api/cli/embedded-postgres.js'
import { parseListeningLine } from '../../../api/routing/supervisor.js'
import { createTestDatabase, redisUrl, type TestDatabase } from '../../support/db.js'
import { jsonLine, myelinBin, runMyelin, startMyelin } from '../../support/cli.js'

interface ReadyLine {
  ready: true
  client_url: string
  processes: { name: string; role: string; pid: number; port: number }[]
}

async function register(base: string, username: string): Promise<{ access_token: string; user_id: string }> {
  const res = await fetch(`${base}/_matrix/client/v3/register`, {
    method: 'POST',
    body: JSON.stringify({ username, password: 'correct horse battery', auth: { type: 'm.login.dummy' } }),
  })
  expect(res.status).to.equal(200)
  return (await res.json()) as { access_token: string; user_id: string }
}

describe('myelin run and myelin cluster (real processes)', function () {
  this.timeout(120_000)
  let t: TestDatabase
  let dir: string

  beforeEach(async () => {
    t = await createTestDatabase()
    dir = await mkdtemp(join(tmpdir(), 'myelin-cli-'))
  })
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true })
    await t.drop()
  })

  /** A monolith's config file in `dir` with one listener (YAML flow mapping). */
  async function monolithConfig(listener: string): Promise<string> {
    const config = join(dir, 'shared.yaml')
    const lines = [
      'server_name: localhost',
      `database: { url: "${t.url}" }`,
      'replication_secret: "0123456789abcdef0123"',
      'signing_key: "ed25519 a1 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="',
      `listeners: [${listener}]`,
    ]
    await writeFile(config, lines.join('\n'))
    return config
  }

  it('run: a monolith prints its listening line, serves /health and stops gracefully on SIGTERM', async () => {
    const config = await monolithConfig('{ port: 0, resources: [client, metrics, health] }')
    const run = await startMyelin(['run', '--config', config], parseListeningLine)
    const base = `http://127.0.0.1:${run.ready}`
    expect(await (await fetch(`${base}/health`)).text()).to.equal('OK')
    await register(base, 'alice')
    expect(await (await fetch(`${base}/metrics`)).text()).to.include('myelin_http_request_duration_seconds')
    run.child.kill('SIGTERM')
    expect(await run.exited).to.equal(0)
    expect(run.output.some((l) => jsonLine(l)?.msg === 'stopped'), 'logged a completed shutdown').to.equal(true)
  })

  it('run: exits 1 naming the address when its listener port is taken, after connecting to the database', async () => {
    const taken = createServer()
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', () => resolve()))
    const port = (taken.address() as AddressInfo).port
    try {
      const config = await monolithConfig(`{ port: ${port}, bind_address: 127.0.0.1, resources: [client] }`)
      const { code, stderr } = await runMyelin(['run', '--config', config], { timeoutMs: 20_000 })
      expect(code, stderr).to.equal(1)
      expect(stderr).to.include(`EADDRINUSE: address already in use 127.0.0.1:${port}`)
    } finally {
      taken.close()
    }
  })

  it('cluster: routes through the router, restarts a SIGKILLed api worker, and stops every child on SIGTERM', async () => {
    const cluster = await startMyelin<ReadyLine>(
      ['cluster', '--database', t.url, '--redis', redisUrl(), '--persisters', '2', '--api-workers', '1', '--port', '0', '--data', dir],
      (line) => (jsonLine(line)?.ready === true ? (jsonLine(line) as unknown as ReadyLine) : undefined),
    )
    const { client_url: base, processes } = cluster.ready
    try {
      expect(processes.map((p) => [p.name, p.role])).to.deep.equal([
        ['persister1', 'persister'],
        ['persister2', 'persister'],
        ['api1', 'api'],
        ['router', 'router'],
      ])
      expect(cluster.ready.client_url, 'the router serves the client URL').to.equal(`http://127.0.0.1:${processes.find((p) => p.role === 'router')!.port}`)
      const alice = await register(base, 'alice')
      const whoami = await fetch(`${base}/_matrix/client/v3/account/whoami`, { headers: { authorization: `Bearer ${alice.access_token}` } })
      expect(await whoami.json()).to.include({ user_id: alice.user_id })
      // The router serves its metrics on the port config/router.yaml names, not on the client port.
      const routerFile = parseYaml(await readFile(join(dir, 'config', 'router.yaml'), 'utf8')) as { metrics: { host: string; port: number } }
      const routerMetrics = await (await fetch(`http://${routerFile.metrics.host}:${routerFile.metrics.port}/metrics`)).text()
      expect(routerMetrics).to.match(/myelin_router_request_duration_seconds_count\{[^}]*route="any"[^}]*status="200"/)
      expect((await fetch(`${base}/metrics`)).status, 'no metrics on the client port').to.equal(404)

      const api = processes.find((p) => p.name === 'api1')!
      process.kill(api.pid, 'SIGKILL')
      let served = false
      for (let i = 0; i < 100 && !served; i++) {
        await sleep(100)
        const res = await fetch(`${base}/_matrix/client/versions`).catch(() => undefined)
        served = res?.status === 200
      }
      expect(served, 'the router serves again once the api worker was restarted').to.equal(true)
      await register(base, 'bob')
    } finally {
      cluster.child.kill('SIGTERM')
      expect(await cluster.exited).to.equal(0)
    }
    await sleep(200)
    for (const p of processes) expect(alive(p.pid), `${p.name} stopped`).to.equal(false)
  })

  it('cluster: refuses URLs of the wrong kind before it starts anything, and exits 2', async () => {
    const data = join(dir, 'never-created')
    const database = await runMyelin(['cluster', '--database', 'localhost:5432/myelin', '--data', data])
    expect([database.code, database.stderr.trim()]).to.deep.equal([2, "error: option '--database <url>' argument 'localhost:5432/myelin' is invalid. --database must be a postgres:// URL"])
    const redis = await runMyelin(['cluster', '--database', t.url, '--redis', 'http://127.0.0.1:6379', '--data', data])
    expect([redis.code, redis.stderr.trim()]).to.deep.equal([2, "error: option '--redis <url>' argument 'http://127.0.0.1:6379' is invalid. --redis must be a redis:// URL"])
    expect(existsSync(data), 'no data folder, lock or PostgreSQL').to.equal(false)
  })

  it('cluster: refuses operator settings that set its own keys or are invalid, listing every problem before it starts anything', async () => {
    const data = join(dir, 'never-created-either')
    const settings = join(dir, 'operator.yaml')
    await writeFile(settings, 'presence: { enabled: nope }\ndatabase: { url: postgres://elsewhere/db }\npush: { ip_range_blocklist: [everywhere] }\n')
    const res = await runMyelin(['cluster', '--database', t.url, '--data', data, '--config', settings])
    expect(res.code, res.stderr).to.equal(2)
    expect(res.stderr).to.include(`${settings}: database is set by myelin cluster itself`)
    expect(res.stderr).to.include('presence.enabled')
    expect(res.stderr).to.include('push.ip_range_blocklist[0]')
    expect(existsSync(data), 'no data folder, lock or PostgreSQL').to.equal(false)
  })

  it('cluster: refuses a data folder another cluster uses, and takes over the lock of a dead one', async () => {
    const flags = ['cluster', '--database', t.url, '--persisters', '1', '--api-workers', '1', '--port', '0', '--data', dir]
    const ready = (line: string) => (jsonLine(line)?.ready === true ? (jsonLine(line) as unknown as ReadyLine) : undefined)
    const first = await startMyelin<ReadyLine>(flags, ready)
    try {
      const second = await runMyelin(flags, { timeoutMs: 30_000 })
      expect(second.code, second.stderr).to.equal(1)
      expect(second.stderr).to.include(`is in use by another myelin cluster (pid ${first.child.pid})`)
      expect((await fetch(`${first.ready.client_url}/_matrix/client/versions`)).status, 'the first cluster still serves').to.equal(200)
    } finally {
      first.child.kill('SIGTERM')
      expect(await first.exited).to.equal(0)
    }
    expect(existsSync(join(dir, 'cluster.pid')), 'the lock is released on stop').to.equal(false)

    const gone = spawn(process.execPath, ['-e', ''])
    await new Promise((resolve) => gone.once('exit', resolve))
    await writeFile(join(dir, 'cluster.pid'), `${gone.pid}\n`)
    const third = await startMyelin<ReadyLine>(flags, ready)
    third.child.kill('SIGTERM')
    expect(await third.exited).to.equal(0)
  })

  it('cluster: a SIGKILL while it starts takes every child with it, even the ones logging to the dead stdout', async () => {
    // Children log at info while they start; once the cluster is gone their stdout has no reader.
    const cluster = spawn(myelinBin, ['cluster', '--database', t.url, '--persisters', '2', '--api-workers', '1', '--port', '0', '--data', dir, '--log-level', 'info'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    cluster.stdout.resume()
    const firstReady = await new Promise<boolean>((resolve) => {
      createInterface({ input: cluster.stderr }).on('line', (line) => jsonLine(line)?.msg === 'child ready' && resolve(true))
      cluster.once('exit', () => resolve(false))
    })
    expect(firstReady, 'a child got ready').to.equal(true)
    const children = childrenOf(cluster.pid!)
    expect(children.length).to.be.at.least(3)
    cluster.kill('SIGKILL')
    for (let i = 0; i < 150 && children.some(alive); i++) await sleep(100)
    const left = children.filter(alive)
    for (const pid of left) process.kill(pid, 'SIGKILL')
    expect(left, 'children still running 15 s after their cluster died').to.deep.equal([])
  })
})

/** The processes whose parent is `pid` (from /proc). */
function childrenOf(pid: number): number[] {
  const children: number[] = []
  for (const entry of readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8')
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) children.push(Number(entry))
    } catch {
      // gone meanwhile
    }
  }
  return children
}
