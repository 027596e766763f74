import { expect } from 'chai'
import { isStorageError } from '../../../../storage/errors.js'
import { formatJson } from '../../../../persisters/simulator/report.js'
import { runSimulation } from '../../../../persisters/simulator/simulate.js'
import type { SimulationOptions, SimulationResult } from '../../../../persisters/simulator/simulate.js'
import { zipfTopShare } from '../../../../persisters/simulator/workload.js'

const small: SimulationOptions = {
  distribution: { kind: 'zipf', rooms: 2000, exponent: 1 },
  ratePerS: 1000,
  durationS: 10,
  persisters: 3,
}

function expectInvalid(options: SimulationOptions, pattern: RegExp, code: 'ES_INVALID_PARAM' | 'ES_CONFIG_INVALID' = 'ES_INVALID_PARAM'): void {
  try {
    runSimulation(options)
  } catch (err) {
    expect(isStorageError(err, code), String(err)).to.equal(true)
    expect((err as Error).message).to.match(pattern)
    return
  }
  expect.fail('expected an error')
}

describe('runSimulation', () => {
  it('should give byte-identical JSON for the same seed and options, and different results for another seed', () => {
    const options: SimulationOptions = { ...small, seed: 11, burstiness: 0.5, pins: { '!room3:sim': 'persister2' } }
    const first = formatJson(runSimulation(options))
    expect(formatJson(runSimulation(options))).to.equal(first)
    const other = runSimulation({ ...options, seed: 12 })
    expect(formatJson(other)).to.not.equal(first)
  })

  it('should account for every event exactly once', () => {
    const result = runSimulation({ ...small, seed: 3 })
    const { events } = result.workload
    // Poisson count: mean 10,000, sd 100
    expect(events).to.be.closeTo(10_000, 500)
    expect(result.persisters.reduce((sum, p) => sum + p.events, 0)).to.equal(events)
    expect(result.persisters.reduce((sum, p) => sum + p.rooms, 0)).to.equal(2000)
    for (const p of result.persisters) {
      expect(p.meanBatch).to.be.at.least(1).and.at.most(100)
      expect(p.transactions).to.be.at.most(p.events)
    }
    expect(result.events.latencyMs.p50).to.be.at.least(result.events.queueDelayMs.p50)
  })

  it('should put a pinned room on its pin', () => {
    for (const strategy of ['rendezvous', 'modulo'] as const) {
      const unpinned = runSimulation({ ...small, strategy, durationS: 2 })
      const target = unpinned.hottestRoom.owner === 'persister1' ? 'persister2' : 'persister1'
      const result = runSimulation({ ...small, strategy, durationS: 2, pins: { '!room0:sim': target } })
      expect(result.hottestRoom).to.include({ roomId: '!room0:sim', owner: target, pinned: true })
      const room = result.rooms.find((r) => r.roomId === '!room0:sim')!
      expect(room.owner).to.equal(target)
      expect(result.topology.pins).to.deep.equal({ '!room0:sim': target })
    }
  })

  it('should list a cold pinned room among the rooms', () => {
    const result = runSimulation({ ...small, durationS: 2, pins: { '!room1999:sim': 'persister3' } })
    const room = result.rooms.find((r) => r.roomId === '!room1999:sim')
    expect(room).to.include({ owner: 'persister3', pinned: true })
  })

  it('should give the hottest Zipf room its analytic share', () => {
    const result = runSimulation({ distribution: { kind: 'zipf', rooms: 5000, exponent: 1.1 }, ratePerS: 5000, durationS: 20, persisters: 2, seed: 5 })
    const analytic = zipfTopShare(5000, 1.1)
    expect(result.hottestRoom.roomId).to.equal('!room0:sim')
    expect(result.hottestRoom.expectedShare).to.be.closeTo(analytic, 1e-6)
    // 100k events: sd of the share is below 0.0016
    expect(result.hottestRoom.share).to.be.closeTo(analytic, 0.008)
  })

  it('should match the service model at light load: solo latency and utilisation', () => {
    // One persister, rare events: every transaction runs alone with one event.
    const result = runSimulation({
      distribution: { kind: 'uniform', rooms: 100 },
      ratePerS: 20,
      durationS: 100,
      persisters: 1,
      model: { txnFixedMs: 2, perEventMs: 0.5, concurrency: 4, parallelEfficiency: 0.25 },
    })
    expect(result.events.latencyMs.p50).to.be.closeTo(2.5, 1e-3)
    const [p] = result.persisters
    // work/s = 20 × 2.5 ms = 50 ms/s; capacity 1.75 → 0.0286; busy fraction ≈ 0.05
    expect(p!.utilisation).to.be.closeTo((20 * 2.5) / 1000 / 1.75, 0.004)
    expect(p!.busyFraction).to.be.closeTo(0.05, 0.006)
    expect(result.events.linearLagMs.max).to.be.below(2.5)
  })

  it('should keep utilisation within [0, 1], growing with the rate, and queueing delay growing with load', () => {
    const results = [200, 600, 1200, 2000].map((ratePerS) => runSimulation({ ...small, ratePerS, durationS: 8, persisters: 2, seed: 9 }))
    const mean = (r: SimulationResult): number => r.persisters.reduce((sum, p) => sum + p.utilisation, 0) / r.persisters.length
    for (const r of results) {
      for (const p of r.persisters) expect(p.utilisation).to.be.within(0, 1)
    }
    for (let i = 1; i < results.length; i++) {
      expect(mean(results[i]!), `utilisation at step ${i}`).to.be.above(mean(results[i - 1]!))
      expect(results[i]!.events.queueDelayMs.mean, `queue delay at step ${i}`).to.be.above(results[i - 1]!.events.queueDelayMs.mean)
      expect(results[i]!.events.latencyMs.p99, `latency p99 at step ${i}`).to.be.above(results[i - 1]!.events.latencyMs.p99)
    }
  })

  it('should report overload as a drain and a full utilisation', () => {
    const result = runSimulation({ ...small, ratePerS: 6000, durationS: 5, persisters: 1 })
    expect(result.drainMs).to.be.above(1000)
    expect(result.persisters[0]!.utilisation).to.be.above(0.97)
    expect(result.persisters[0]!.meanQueueDepth).to.be.above(100)
  })

  it('should have no linear-position lag with one writer running one transaction at a time', () => {
    const result = runSimulation({ ...small, persisters: 1, ratePerS: 300, model: { concurrency: 1 } })
    expect(result.events.linearLagMs.max).to.equal(0)
    expect(result.events.maxPositionGap).to.equal(0)
  })

  it('should show linear-position lag when writers commit out of order', () => {
    const result = runSimulation({ ...small, persisters: 4, ratePerS: 1500, seed: 2 })
    expect(result.events.linearLagMs.max).to.be.above(0)
    expect(result.events.maxPositionGap).to.be.above(0)
    expect(result.events.linearLagMs.p50).to.be.at.most(result.events.linearLagMs.p99)
    expect(result.cdf.linearLagMs.at(-1)).to.equal(result.events.linearLagMs.max)
  })

  it('should report moved rooms near 1/(N+1) for rendezvous and N/(N+1) for modulo', () => {
    const result = runSimulation({ ...small, durationS: 1, distribution: { kind: 'uniform', rooms: 10_000 }, persisters: 4 })
    const add = Object.fromEntries(result.moved.add.strategies.map((s) => [s.strategy, s.fraction]))
    expect(add.rendezvous).to.be.closeTo(1 / 5, 0.025)
    expect(add.modulo).to.be.closeTo(4 / 5, 0.025)
  })

  it('should simulate a trace with its real room IDs', () => {
    const rows = [
      { roomId: '!big:example.org', events: 900 },
      { roomId: '!small:example.org', events: 100 },
      { roomId: '!idle:example.org', events: 0 },
    ]
    const result = runSimulation({ distribution: { kind: 'trace', rows, source: 't.csv' }, ratePerS: 500, durationS: 10, persisters: 2 })
    expect(result.workload.rooms).to.equal(3)
    expect(result.hottestRoom.roomId).to.equal('!big:example.org')
    expect(result.hottestRoom.share).to.be.closeTo(0.9, 0.03)
    expect(result.rooms.find((r) => r.roomId === '!idle:example.org')?.events).to.equal(0)
  })

  it('should reject invalid options, listing every problem', () => {
    expectInvalid({ ratePerS: 0, durationS: -1, persisters: 0 }, /rate must be > 0.*duration must be > 0.*persisters must be an integer/)
    expectInvalid({ burstiness: 1.5 }, /burstiness must be in \[0, 1\]/)
    expectInvalid({ model: { maxBatch: 0, concurrency: 1.5 } }, /max batch.*concurrency/)
    expectInvalid({ ratePerS: 1e6, durationS: 1000 }, /lower the rate or the duration/)
    expectInvalid({ ...small, pins: { '!nope:sim': 'persister1' } }, /!nope:sim not in the workload/)
    expectInvalid({ ...small, pins: { '!room0:sim': 'persister7' } }, /persister7/, 'ES_CONFIG_INVALID')
    expectInvalid({ distribution: { kind: 'trace', rows: [], source: 'x.csv' } }, /x\.csv has no rooms/)
  })
})
