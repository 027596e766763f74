import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect } from 'chai'
import { createTestDatabase, redisUrl, type TestDatabase } from '../../support/db.js'
import { loadWithCrash } from './crash-load.js'
import { apiSend, createRoomsOnEveryWriter, register, startTestCluster, type SendAttempt, type TestCluster } from './test-cluster.js'

const sends = 200
const killAfterAcks = 50

/**
 * The Matrix client's view of a crash: `myelin cluster` (2 persisters, 1 api worker, Redis),
 * rooms made with `POST /createRoom`, messages sent with `PUT /rooms/{id}/send/…/{txnId}` and read
 * with `/sync`, all through the router; a child (a persister, the api worker, the router itself)
 * is SIGKILLed under load and clients retry failed sends with the same txn ID until 200.
 */
describe('client API through the router: crash under load (real processes, SIGKILL a child)', function () {
  this.timeout(90_000)
  let t: TestDatabase
  let dir: string
  let cluster: TestCluster
  let user: { access_token: string; user_id: string; device_id: string }
  let rooms: string[]

  before(async () => {
    t = await createTestDatabase()
    dir = await mkdtemp(join(tmpdir(), 'myelin-client-crash-'))
    cluster = await startTestCluster({ databaseUrl: t.url, redisUrl: redisUrl(), dataDir: dir })
    user = await register(cluster.run.ready.client_url, 'carol')
    rooms = await createRoomsOnEveryWriter(cluster, user.access_token, 2)
  })
  after(async () => {
    await cluster?.stop()
    await rm(dir, { recursive: true, force: true })
    await t?.drop()
  })

  /** Sends from 32 concurrent clients through the router, counting send attempts that failed; `crash()` in the middle. */
  async function crashUnderLoad(crash: () => void): Promise<{ syncFailures: number; failedSends: number }> {
    const base = cluster.run.ready.client_url
    let failedSends = 0
    const onAttempt = (attempt: SendAttempt) => {
      if (attempt.status !== 200) failedSends += 1
    }
    const { syncFailures } = await loadWithCrash({
      db: t.db,
      clientUrl: base,
      accessToken: user.access_token,
      rooms,
      sends,
      crashAfterAcks: killAfterAcks,
      send: (roomId, txnId, body) => apiSend(base, user.access_token, roomId, txnId, body, { onAttempt }),
      crash,
    })
    return { syncFailures, failedSends }
  }

  // The router fails a send over to the api worker when the owner is unreachable (or the
  // connection reset before an answer: PUT is idempotent), and the api worker's replication
  // sender retries until the owner is back, so clients may never see the crash; their own
  // retries (same txn) cover what is left (502/503 answers).
  it('SIGKILL of a room owner persister: every send gives one event, seen once by /sync', async () => {
    const victim = cluster.shardMap.ownerOf(rooms[0]!)
    await crashUnderLoad(() => process.kill(cluster.pidOf(victim), 'SIGKILL'))
    expect(cluster.restartsOf(victim), `${victim} crashed and was restarted`).to.equal(1)
  })

  it('SIGKILL of the api worker: sends and /sync continue; nothing lost or repeated', async () => {
    const { syncFailures } = await crashUnderLoad(() => process.kill(cluster.pidOf('api1'), 'SIGKILL'))
    expect(cluster.restartsOf('api1'), 'api1 crashed and was restarted').to.equal(1)
    expect(syncFailures, 'syncs that failed while the api worker restarted').to.be.greaterThan(0)
  })

  // Sends in flight when the router dies may have been persisted without the client hearing
  // back (connection reset); until the supervisor restarted the router on the same port, new
  // connections are refused. Clients retry with the same txn ID against the same URL.
  it('SIGKILL of the router: it restarts on the same port; clients retry; every send gives one event, seen once by /sync', async () => {
    const routerPid = cluster.pidOf('router')
    const { syncFailures, failedSends } = await crashUnderLoad(() => process.kill(routerPid, 'SIGKILL'))
    expect(cluster.restartsOf('router'), 'the router crashed and was restarted').to.equal(1)
    expect(failedSends, 'send attempts that failed while the router was down').to.be.greaterThan(0)
    expect(syncFailures, 'syncs that failed while the router was down').to.be.greaterThan(0)
  })
})
