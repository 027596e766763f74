import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect } from 'chai'
import { createTestDatabase, redisUrl, type TestDatabase } from '../../support/db.js'
import { loadWithCrash } from './crash-load.js'
import { createRoomEvents, persistOnce, untilOk } from './replication-client.js'
import { clientSend, register, roomsOnEveryWriter, startTestCluster, type TestCluster } from './test-cluster.js'

const sends = 240
const killAfterAcks = 60

/**
 * `myelin cluster` (2 persisters, 1 api worker, Redis bus) with a child SIGKILLed under load.
 * Sends go to the owner persister's replication endpoint as an api worker sends them (a fresh
 * request per client retry, same txn); reads are `/sync` through the router.
 */
describe('cluster crash under load (real processes, SIGKILL a child)', function () {
  this.timeout(90_000)
  let t: TestDatabase
  let dir: string
  let cluster: TestCluster
  let user: { access_token: string; user_id: string; device_id: string }
  let rooms: string[]

  before(async () => {
    t = await createTestDatabase()
    dir = await mkdtemp(join(tmpdir(), 'myelin-cluster-crash-'))
    cluster = await startTestCluster({ databaseUrl: t.url, redisUrl: redisUrl(), dataDir: dir })
    user = await register(cluster.run.ready.client_url, 'alice')
    rooms = roomsOnEveryWriter(cluster, 3)
    for (const roomId of rooms) {
      const target = cluster.persisters.get(cluster.shardMap.ownerOf(roomId))!
      await untilOk(() => persistOnce(target, `create-${roomId}`, roomId, createRoomEvents(user.user_id)))
    }
  })
  after(async () => {
    await cluster?.stop()
    await rm(dir, { recursive: true, force: true })
    await t?.drop()
  })

  /** Sends to the owners' replication endpoints from 32 concurrent clients, counting sends that needed a retry; `crash()` in the middle. */
  async function crashUnderLoad(crash: () => void): Promise<{ retriedSends: number; syncFailures: number }> {
    let retriedSends = 0
    const { syncFailures } = await loadWithCrash({
      db: t.db,
      clientUrl: cluster.run.ready.client_url,
      accessToken: user.access_token,
      rooms,
      sends,
      crashAfterAcks: killAfterAcks,
      send: async (roomId, txnId, body) => {
        const sent = await clientSend(cluster, roomId, user.user_id, { deviceId: user.device_id, txnId }, body)
        if (sent.attempts > 1) retriedSends += 1
        return sent.eventId
      },
      crash,
    })
    return { retriedSends, syncFailures }
  }

  it('SIGKILL of a persister: clients retry with the same txn; every acked event is stored and synced exactly once', async () => {
    const victim = cluster.shardMap.ownerOf(rooms[0]!)
    const { retriedSends } = await crashUnderLoad(() => process.kill(cluster.pidOf(victim), 'SIGKILL'))
    expect(cluster.restartsOf(victim), `${victim} crashed and was restarted`).to.equal(1)
    expect(retriedSends, 'sends that had to be retried across the crash').to.be.greaterThan(0)
  })

  it('SIGKILL of the api worker: /sync resumes from the last next_batch without losing or repeating events', async () => {
    const { syncFailures } = await crashUnderLoad(() => process.kill(cluster.pidOf('api1'), 'SIGKILL'))
    expect(cluster.restartsOf('api1'), 'api1 crashed and was restarted').to.equal(1)
    expect(syncFailures, 'syncs that failed while the api worker restarted').to.be.greaterThan(0)
  })
})
