import { expect } from 'chai'
import { randomUUID } from 'node:crypto'
import PQueue from 'p-queue'
import type { Persister } from '../../../persisters/persister.js'
import { createShardMap } from '../../../persisters/shard-map.js'
import { runSimulation } from '../../../persisters/simulator/simulate.js'
import type { TraceRow } from '../../../persisters/simulator/workload.js'
import { createTestDatabase, type TestDatabase } from '../../support/db.js'
import { createRoomEvents, serverName, startPersister, user } from '../persisters/harness.js'

/**
 * The simulator against a small real cluster: three persisters (real ID generators, real
 * PostgreSQL, the same shard map) fed the simulator's own arrival sequence.
 */
describe('myelin simulate checked against real persisters', function () {
  this.timeout(120_000)
  const writers = ['persister1', 'persister2', 'persister3']
  const alice = user('alice')
  let t: TestDatabase
  let persisters: Map<string, Persister>

  before(async () => {
    t = await createTestDatabase()
    persisters = new Map()
    for (const writer of writers) persisters.set(writer, await startPersister(t.db, { writer, writers }))
  })
  after(async () => {
    for (const p of persisters.values()) await p.close()
    await t.drop()
  })

  it('should predict per-persister event counts exactly, and the throughput ceiling within a factor of 10', async () => {
    // A skewed trace: room i has weight 1/(i+1), real room IDs on this server.
    const rows: TraceRow[] = Array.from({ length: 40 }, (_, i) => ({ roomId: `!trace${i}:${serverName}`, events: Math.ceil(400 / (i + 1)) }))
    const arrivals: string[] = []
    const simulated = runSimulation({
      seed: 11,
      distribution: { kind: 'trace', rows, source: 'test' },
      ratePerS: 500,
      durationS: 2,
      persisters: writers.length,
      onArrival: (roomId) => arrivals.push(roomId),
    })
    expect(arrivals.length).to.equal(simulated.workload.events)

    const shardMap = createShardMap({ writers })
    const via = (roomId: string) => persisters.get(shardMap.ownerOf(roomId))!
    for (const { roomId } of rows) {
      await via(roomId).persist({ requestId: randomUUID(), roomId, events: createRoomEvents(alice, { joinRule: 'public' }) })
    }

    // Replay the arrivals as fast as the cluster takes them: the measured ceiling.
    const queue = new PQueue({ concurrency: 64 })
    const started = performance.now()
    arrivals.forEach((roomId, i) =>
      void queue.add(() => via(roomId).persist({ requestId: randomUUID(), roomId, events: [{ type: 'm.room.message', sender: alice, content: { body: `m${i}` } }] })),
    )
    await queue.onIdle()
    const measuredPerS = arrivals.length / ((performance.now() - started) / 1000)

    const { rows: counts } = await t.pool.query<{ instance_name: string; n: number }>(
      `SELECT instance_name, count(*)::int AS n FROM events WHERE type = 'm.room.message' GROUP BY instance_name`,
    )
    const real = Object.fromEntries(counts.map((r) => [r.instance_name, r.n]))
    for (const p of simulated.persisters) expect(real[p.name] ?? 0, `${p.name} events`).to.equal(p.events)

    // The throughput ceiling the simulator predicts for this workload: the same rooms arriving
    // all at once (as the replay above did), events / time until the last commit. The simulator
    // does not model the PostgreSQL and the two cores the three persisters share here, so only
    // the order of magnitude is checked (a factor of 10 either way); benchmarks give figures.
    const burst = runSimulation({
      seed: 11,
      distribution: { kind: 'trace', rows, source: 'test' },
      ratePerS: 100_000,
      durationS: arrivals.length / 100_000,
      persisters: writers.length,
    })
    const predictedPerS = burst.workload.events / (burst.horizonMs / 1000)
    const ratio = measuredPerS / predictedPerS
    expect(ratio, `measured ${measuredPerS.toFixed(0)}/s vs predicted ${predictedPerS.toFixed(0)}/s`).to.be.within(0.1, 10)
  })
})
