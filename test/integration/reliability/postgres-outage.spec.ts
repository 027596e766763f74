import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { setTimeout as sleep } from 'node:timers/promises'
import { expect } from 'chai'
import { createTestDatabase, redisUrl, type TestDatabase } from '../../support/db.js'
import { startTcpProxy, type TcpProxy } from '../storage/bus-tcp-proxy.js'
import { eventually, loadSend } from './load.js'
import { expectSendsExactlyOnce } from './stored-events.js'
import { startSyncLoop, type SyncLoop } from './sync-loop.js'
import { apiSend, createRoomsOnEveryWriter, register, startTestCluster, type SendAttempt, type TestCluster } from './test-cluster.js'

const execFileAsync = promisify(execFile)

/** How long PostgreSQL stays unreachable. */
const outageMs = 5_000
/** No send attempt may take longer than this, outage or not (the answer then is a 503). */
const attemptBoundMs = 5_000
/** After the restore, a send to a room of every persister succeeds within this. */
const recoveryBoundMs = 15_000
/** Concurrent clients of the load. */
const clients = 8

/**
 * `myelin cluster` (2 persisters, 1 api worker, Redis bus) loses PostgreSQL while clients send
 * through the router (`PUT …/send/…/{txnId}`, retried with the same txn ID, honouring
 * `retry_after_ms`) and sync; the database is checked over a direct connection afterwards. Two
 * ways to lose it: a TCP proxy the test cuts (open connections closed, new ones refused), and a
 * real stop and start of the test server (`pg_ctl stop -m fast`, which terminates every backend,
 * then `pg_ctl start`).
 */
describe('PostgreSQL outage under a cluster (real processes)', function () {
  this.timeout(120_000)

  describe('cut by a TCP proxy', () => {
    let proxy: TcpProxy
    const outage = outageUnderLoad(async (t) => {
      const direct = new URL(t.url)
      proxy = await startTcpProxy(direct.hostname, Number(direct.port))
      const proxied = new URL(t.url)
      proxied.host = `127.0.0.1:${proxy.port}`
      return {
        databaseUrl: proxied.toString(),
        cut: () => proxy.stop(),
        restore: () => proxy.start(),
        cleanUp: async () => {
          await proxy.start()
          await proxy.stop()
        },
      }
    })
    it(outage.title, outage.test)
  })

  describe('stopped and started (pg_ctl)', () => {
    const server = testServer()
    const outage = outageUnderLoad(async (t) => ({
      databaseUrl: t.url,
      cut: () => server.stop(),
      restore: () => server.start(),
      cleanUp: () => server.start(),
    }))
    it(outage.title, outage.test)
  })
})

/** How a test loses PostgreSQL and gets it back. */
interface Outage {
  /** What the cluster connects to. */
  readonly databaseUrl: string
  cut(): Promise<void>
  restore(): Promise<void>
  /** Leaves PostgreSQL reachable again, whatever happened. */
  cleanUp(): Promise<void>
}

/**
 * The test body shared by both ways: sends answer 503 while PostgreSQL is gone, every persister
 * takes writes again within `recoveryBoundMs` after, and every acknowledged event is stored and
 * synced exactly once.
 */
function outageUnderLoad(setUp: (t: TestDatabase) => Promise<Outage>): { title: string; test: () => Promise<void> } {
  return {
    title:
      'sends answer 503 {errcode, error, retry_after_ms} while it is down (never 500, never a hang); then every persister takes writes again; each acked event is stored and synced once',
    async test() {
      const t = await createTestDatabase()
      const dir = await mkdtemp(join(tmpdir(), 'myelin-postgres-outage-'))
      let outage: Outage | undefined
      let cluster: TestCluster | undefined
      let sync: SyncLoop | undefined
      try {
        outage = await setUp(t)
        cluster = await startTestCluster({ databaseUrl: outage.databaseUrl, redisUrl: redisUrl(), dataDir: dir })
        const user = await register(cluster.run.ready.client_url, 'dave')
        const rooms = await createRoomsOnEveryWriter(cluster, user.access_token, 2)
        sync = startSyncLoop(cluster.run.ready.client_url, user.access_token)
        await loadThroughOutage(cluster, outage, user, rooms, sync, t)
      } finally {
        await sync?.stop()
        await outage?.cleanUp()
        await cluster?.stop()
        await rm(dir, { recursive: true, force: true })
        await t.drop()
      }
    },
  }
}

async function loadThroughOutage(
  cluster: TestCluster,
  outage: Outage,
  user: { access_token: string },
  rooms: readonly string[],
  sync: SyncLoop,
  t: TestDatabase,
): Promise<void> {
  const base = cluster.run.ready.client_url
  const label = randomBytes(3).toString('hex')
  const acked = new Map<number, string>()
  const attempts: SendAttempt[] = []
  const send = async (i: number) => {
    const { txnId, body } = loadSend(label, i)
    const eventId = await apiSend(base, user.access_token, rooms[i % rooms.length]!, txnId, body, {
      onAttempt: (a) => attempts.push(a),
      honorRetryAfter: true,
      attemptTimeoutMs: attemptBoundMs * 2,
    })
    acked.set(i, eventId)
  }
  let next = 0
  let loading = true
  const load = Promise.all(
    Array.from({ length: clients }, async () => {
      while (loading) await send(next++)
    }),
  )
  const roomIndexOnEveryPersister = () => [...cluster.persisters.keys()].map((writer) => rooms.findIndex((r) => cluster.shardMap.ownerOf(r) === writer))

  try {
    await eventually('sends acknowledged before the outage', () => acked.size >= 20, 20_000)
    await outage.cut()
    const cutAt = Date.now()
    await sleep(outageMs)
    const restoredAt = Date.now()
    await outage.restore()

    // Full recovery: a fresh send to a room of each persister succeeds within the bound (send
    // i goes to rooms[i % rooms.length]; these indexes are past the load's).
    const recoveryMs = await Promise.all(
      roomIndexOnEveryPersister().map((roomIndex) => send(rooms.length * 1_000_000 + roomIndex).then(() => Date.now() - restoredAt)),
    )
    expect(Math.max(...recoveryMs), 'ms from the restore until a send to a room of every persister succeeded').to.be.below(recoveryBoundMs)
    const ackedAtRecovery = acked.size
    await eventually('the load goes on after the restore', () => acked.size >= ackedAtRecovery + 20, 20_000)
    loading = false
    await load

    const during = attempts.filter((a) => a.startedAt >= cutAt && a.endedAt <= restoredAt)
    expect(during.length, 'send attempts answered while PostgreSQL was down').to.be.greaterThan(0)
    const wrong = attempts.filter((a) => a.status !== 200 && !(a.status === 503 && isUnavailableBody(a.body)))
    expect(wrong.map(describeAttempt), 'failed send attempts other than 503 {errcode, error, retry_after_ms} (a 500, a transport error, a timeout)').to.deep.equal([])
    expect(during.filter((a) => a.status === 200).map(describeAttempt), 'sends acknowledged while PostgreSQL was down').to.deep.equal([])
    const slow = attempts.filter((a) => a.endedAt - a.startedAt > attemptBoundMs)
    expect(slow.map(describeAttempt), `send attempts that took longer than ${attemptBoundMs} ms`).to.deep.equal([])

    await eventually('sync delivered every acknowledged event', () => [...acked.values()].every((id) => sync.seen.has(id)), 30_000)
    expect(Object.keys(sync.failureStatuses).filter((status) => status !== '503'), '/sync failures other than 503').to.deep.equal([])
    for (const p of cluster.run.ready.processes) expect(cluster.restartsOf(p.name), `restarts of ${p.name}`).to.equal(0)
  } finally {
    loading = false
    await load.catch(() => {})
    await sync.stop()
  }
  await expectSendsExactlyOnce(t.db, rooms, label, acked, sync)
}

/**
 * The test PostgreSQL server itself (scripts/test-services.sh exports its binaries and data
 * folder; it runs as the `postgres` user). `stop` terminates every backend (`-m fast`).
 */
function testServer(): { stop(): Promise<void>; start(): Promise<void> } {
  const bin = process.env.MYELIN_TEST_PG_BIN
  const data = process.env.MYELIN_TEST_PGDATA
  if (!bin || !data) throw new Error('MYELIN_TEST_PG_BIN / MYELIN_TEST_PGDATA are not set: run the tests through `make test`')
  const pgCtl = async (...args: string[]) => {
    await execFileAsync('runuser', ['-u', 'postgres', '--', join(bin, 'pg_ctl'), '-D', data, '-w', ...args])
  }
  let running = true
  return {
    async stop() {
      await pgCtl('-m', 'fast', 'stop')
      running = false
    },
    async start() {
      if (running) return
      await pgCtl('-l', join(data, 'server.log'), 'start')
      running = true
    },
  }
}

/** A Matrix "try again later" answer: `{errcode, error, retry_after_ms}` with a positive wait. */
function isUnavailableBody(body: unknown): boolean {
  if (typeof body !== 'object' || body === null) return false
  const b = body as Record<string, unknown>
  return typeof b.errcode === 'string' && typeof b.error === 'string' && typeof b.retry_after_ms === 'number' && b.retry_after_ms > 0
}

function describeAttempt(a: SendAttempt): string {
  return `${a.txnId}: ${a.status ?? a.error} after ${a.endedAt - a.startedAt} ms ${JSON.stringify(a.body)}`
}
