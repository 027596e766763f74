import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect } from 'chai'
import { createTestDatabase, redisUrl, type TestDatabase } from '../../support/db.js'
import { eventually, loadSend, runLoad } from './load.js'
import { createRoomEvents, persistOnce, untilOk } from './replication-client.js'
import { expectSendsExactlyOnce } from './stored-events.js'
import { startSyncLoop } from './sync-loop.js'
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

  /**
   * Sends `sends` messages from 32 concurrent clients (each retrying until 200), calls `crash`
   * once `killAfterAcks` were acknowledged, then checks storage and `/sync`.
   */
  async function loadWithCrash(crash: () => void): Promise<{ retriedSends: number; syncFailures: number }> {
    const label = randomBytes(3).toString('hex')
    const sync = startSyncLoop(cluster.run.ready.client_url, user.access_token)
    const acked = new Map<number, string>()
    let retriedSends = 0
    let crashed = false
    try {
      await runLoad(sends, 32, async (i) => {
        const { txnId, body } = loadSend(label, i)
        const sent = await clientSend(cluster, rooms[i % rooms.length]!, user.user_id, { deviceId: user.device_id, txnId }, body)
        acked.set(i, sent.eventId)
        if (sent.attempts > 1) retriedSends += 1
        if (acked.size >= killAfterAcks && !crashed) {
          crashed = true
          crash()
        }
      })
      expect(crashed, 'the crash happened during the load').to.equal(true)
      expect(acked.size, 'every send acknowledged in the end').to.equal(sends)
      await eventually('sync delivered every acknowledged event', () => [...acked.values()].every((id) => sync.seen.has(id)))
    } finally {
      await sync.stop()
    }
    await expectSendsExactlyOnce(t.db, rooms, label, acked, sync)
    return { retriedSends, syncFailures: sync.failures }
  }

  it('SIGKILL of a persister: clients retry with the same txn; every acked event is stored and synced exactly once', async () => {
    const victim = cluster.shardMap.ownerOf(rooms[0]!)
    const { retriedSends } = await loadWithCrash(() => process.kill(cluster.pidOf(victim), 'SIGKILL'))
    expect(cluster.restartsOf(victim), `${victim} crashed and was restarted`).to.equal(1)
    expect(retriedSends, 'sends that had to be retried across the crash').to.be.greaterThan(0)
  })

  it('SIGKILL of the api worker: /sync resumes from the last next_batch without losing or repeating events', async () => {
    const { syncFailures } = await loadWithCrash(() => process.kill(cluster.pidOf('api1'), 'SIGKILL'))
    expect(cluster.restartsOf('api1'), 'api1 crashed and was restarted').to.equal(1)
    expect(syncFailures, 'syncs that failed while the api worker restarted').to.be.greaterThan(0)
  })
})
