import { randomUUID } from 'node:crypto'
import { expect } from 'chai'
import fastify, { type FastifyInstance } from 'fastify'
import { Registry } from 'prom-client'
import { createReplicationSender, type ReplicationSender } from '../../../api/replication-sender.js'
import { RejectedEventError } from '../../../persisters/persist-errors.js'
import type { Persister } from '../../../persisters/persister.js'
import { replicationRoutes } from '../../../persisters/replication-routes.js'
import { createShardMap } from '../../../persisters/shard-map.js'
import { silentLogger } from '../../../storage/logger.js'
import { createStreamTracker, type StreamTracker } from '../../../storage/streams/stream-tracker.js'
import { createTestDatabase, type TestDatabase } from '../../support/db.js'
import { createRoomEvents, eventCount, message, newRoomId, startPersister, user } from '../persisters/harness.js'

const secret = 'a-replication-secret-of-enough-length'
const alice = user('alice')
const bob = user('bob')

/** The persister `p1` behind its replication routes on a real port, and an api worker's sender to it. */
describe('replication sender (api worker → persister over HTTP)', () => {
  let t: TestDatabase
  let persister: Persister
  let app: FastifyInstance
  let tracker: StreamTracker
  let sender: ReplicationSender
  let registry: Registry
  let calls: string[]

  before(async () => {
    t = await createTestDatabase()
    persister = await startPersister(t.db, { writer: 'p1' })
    app = fastify()
    calls = []
    app.addHook('onRequest', async (request) => {
      calls.push(request.url.replace(/\/persist\/.*/, '/persist/:id'))
    })
    await app.register(replicationRoutes, { persister, replicationSecret: secret })
    await app.listen({ port: 0, host: '127.0.0.1' })
    const port = (app.server.address() as { port: number }).port
    tracker = createStreamTracker({ db: t.db, log: silentLogger(), pollIntervalMs: 20 })
    await tracker.start()
    registry = new Registry()
    sender = createReplicationSender({
      instanceMap: { p1: { host: '127.0.0.1', port, tls: false } },
      secret,
      shardMap: createShardMap({ writers: ['p1'] }),
      tracker,
      log: silentLogger(),
      registry,
    })
  })
  after(async () => {
    await sender.close()
    await tracker.close()
    await app.close()
    await persister.close()
    await t.drop()
  })

  async function batchSizes(): Promise<{ sum: number; count: number }> {
    const values = (await registry.getSingleMetric('myelin_replication_batch_requests')!.get()).values as { metricName?: string; value: number }[]
    const total = (suffix: string) => values.filter((v) => v.metricName === `myelin_replication_batch_requests_${suffix}`).reduce((a, v) => a + v.value, 0)
    return { sum: total('sum'), count: total('count') }
  }

  it('coalesces concurrent sends into persist_batch calls; each send gets its own answer or refusal', async () => {
    const rooms = [newRoomId(), newRoomId(), newRoomId()]
    for (const roomId of rooms) await sender.send({ requestId: randomUUID(), roomId, events: createRoomEvents(alice) })
    const before = { counts: await Promise.all(rooms.map((r) => eventCount(t.db, r))), batches: await batchSizes(), calls: calls.length }

    const covered: boolean[] = []
    const sends = Array.from({ length: 30 }, (_, i) => {
      const roomId = rooms[i % rooms.length] as string
      const refused = i % 10 === 9
      const promise = sender.send({ requestId: randomUUID(), roomId, events: [message(refused ? bob : alice, `m${i}`)] }).then((events) => {
        // Read-your-writes: when a send resolves, this worker's tracker already covers it.
        covered.push((tracker.positions().get('p1') ?? 0n) >= events[0]!.stream_ordering)
        return events
      })
      return { roomId, refused, promise }
    })
    const settled = await Promise.allSettled(sends.map((s) => s.promise))

    settled.forEach((outcome, i) => {
      if (sends[i]!.refused) {
        expect(outcome.status, `send ${i}`).to.equal('rejected')
        const reason = (outcome as PromiseRejectedResult).reason as RejectedEventError
        expect(reason).to.be.instanceOf(RejectedEventError)
        expect(reason.code).to.equal('ES_FORBIDDEN')
      } else {
        expect(outcome.status, `send ${i}`).to.equal('fulfilled')
        const [event] = (outcome as PromiseFulfilledResult<{ event_id: string; stream_ordering: bigint }[]>).value
        expect(event!.event_id).to.match(/^\$/)
      }
    })
    expect(covered).to.have.length(27)
    expect(covered.every(Boolean), 'the tracker covered every answer before it resolved').to.equal(true)
    const after = { counts: await Promise.all(rooms.map((r) => eventCount(t.db, r))), batches: await batchSizes() }
    expect(after.counts.map((n, k) => n - before.counts[k]!), 'nine accepted sends per room').to.deep.equal([9, 9, 9])
    const requests = after.batches.sum - before.batches.sum
    const replicationCalls = after.batches.count - before.batches.count
    expect(requests, 'every send made exactly one first attempt').to.equal(30)
    expect(replicationCalls, 'concurrent sends shared calls').to.be.below(30)
    expect(calls.slice(before.calls).filter((c) => c.endsWith('/persist_batch')).length).to.be.at.least(1)
  })

  it('sends a request too large to coalesce on its own, next to coalesced small ones', async () => {
    const roomId = newRoomId()
    await sender.send({ requestId: randomUUID(), roomId, events: createRoomEvents(alice) })
    const start = calls.length
    const big = sender.send({ requestId: randomUUID(), roomId, events: Array.from({ length: 150 }, (_, i) => message(alice, `${i} ${'x'.repeat(8000)}`)) })
    const small = [1, 2, 3].map((i) => sender.send({ requestId: randomUUID(), roomId, events: [message(alice, `small ${i}`)] }))
    expect((await big).length).to.equal(150)
    expect((await Promise.all(small)).map((events) => events.length)).to.deep.equal([1, 1, 1])
    expect(calls.slice(start).sort()).to.deep.equal(['/_myelin/replication/persist/:id', '/_myelin/replication/persist_batch'])
  })

  it('sends a lone request through the single persist route', async () => {
    const roomId = newRoomId()
    const start = calls.length
    await sender.send({ requestId: randomUUID(), roomId, events: createRoomEvents(alice) })
    expect(calls.slice(start)).to.deep.equal(['/_myelin/replication/persist/:id'])
  })
})
