import { expect } from 'chai'
import { checkE2eGoals, describeGoalChecks } from '../../../scripts/bench/e2e-goals.js'
import { summarize, type LoadResult } from '../../../scripts/bench/loadgen.js'

/** A result whose five goal figures are the given ones (each latency summary from 100 equal samples). */
function result(figures: { eventsPerS: number; sendP99: number; wakeP99: number; probesLost: number; hotP99: number }): LoadResult {
  const samples = (v: number) => Array.from({ length: 100 }, () => v)
  return {
    events: 1000,
    errors: 0,
    eventsPerS: figures.eventsPerS,
    sendMs: summarize(samples(figures.sendP99)),
    hotRoomSendMs: summarize(samples(figures.hotP99)),
    hotRoomShare: 0.27,
    syncWakeupMs: summarize(samples(figures.wakeP99)),
    idleSyncWakeupMs: summarize(samples(1)),
    probesSent: 100,
    probesLost: figures.probesLost,
    wallS: 20,
  }
}

const atGoals = { eventsPerS: 3000, sendP99: 50, wakeP99: 20, probesLost: 0, hotP99: 100 }

describe('e2e goals (make bench checks the 1 api + 2 persisters, Zipf, C = 64 figures)', () => {
  it('should meet every goal at exactly its bound, and report each figure', () => {
    const checks = checkE2eGoals(result(atGoals))
    expect(checks.met).to.equal(true)
    expect(checks.checks.map((c) => [c.value, c.met])).to.deep.equal([
      [3000, true],
      [50, true],
      [20, true],
      [0, true],
      [100, true],
    ])
    expect(describeGoalChecks(checks)).to.match(/^5\/5 goals met: events\/s >= 3000: 3000 met; /)
  })

  it('should fail exactly the goal whose figure is just past its bound', () => {
    const pastBound = [
      { eventsPerS: 2999 },
      { sendP99: 50.01 },
      { wakeP99: 20.01 },
      { probesLost: 1 },
      { hotP99: 100.01 },
    ]
    for (const [i, change] of pastBound.entries()) {
      const checks = checkE2eGoals(result({ ...atGoals, ...change }))
      expect(checks.met, JSON.stringify(change)).to.equal(false)
      expect(checks.checks.map((c) => c.met), JSON.stringify(change)).to.deep.equal([0, 1, 2, 3, 4].map((j) => j !== i))
      expect(describeGoalChecks(checks)).to.match(/^4\/5 goals met: /).and.to.include('NOT met')
    }
  })

  it('should fail a latency goal that has no samples, rather than read its empty p99 of 0 as met', () => {
    const noProbeDelivered = { ...result(atGoals), syncWakeupMs: summarize([]), probesLost: 0 }
    const checks = checkE2eGoals(noProbeDelivered)
    expect(checks.met).to.equal(false)
    expect(checks.checks.filter((c) => !c.met).map((c) => c.goal)).to.deep.equal(['sync wake-up p99 under load <= 20 ms'])
    // NaN is printed as null in the JSON result line.
    expect(JSON.parse(JSON.stringify(checks)).checks[2].value).to.equal(null)
  })
})
