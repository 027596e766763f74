import { expect } from 'chai'
import { combineRuns, probeTxnPrefix, summarize } from '../../../scripts/bench/loadgen.js'
import type { LoadRun } from '../../../scripts/bench/loadgen.js'
import { httpBaseline } from '../../../scripts/bench/e2e-bench.js'

/** A run whose figures follow from its samples, the way `runLoad` reports them. */
function loadRun(eventsPerS: number, samples: { send: number[]; hot?: number[]; wake: number[]; idle?: number[] }, extra: Partial<LoadRun> = {}): LoadRun {
  const hot = samples.hot ?? []
  return {
    events: samples.send.length,
    errors: 0,
    eventsPerS,
    sendMs: summarize(samples.send),
    hotRoomSendMs: summarize(hot),
    hotRoomShare: hot.length / samples.send.length,
    syncWakeupMs: summarize(samples.wake),
    idleSyncWakeupMs: summarize(samples.idle ?? []),
    probesSent: samples.wake.length,
    probesLost: 0,
    wallS: 20,
    samples: { sendMs: samples.send, hotRoomSendMs: hot, syncWakeupMs: samples.wake, idleSyncWakeupMs: samples.idle ?? [] },
    ...extra,
  }
}

describe('load generator: combineRuns', () => {
  it('should take the median run for events/s and pool the samples for the percentiles', () => {
    const ones = Array.from({ length: 99 }, () => 1)
    // Each run: 99 fast probes and one slow one, so its own p99 is 1 ms.
    const runs = [
      loadRun(1000, { send: [10, 20, 30, 40], wake: [...ones, 50] }),
      loadRun(3000, { send: [5, 6], wake: [...ones, 60] }),
      loadRun(2000, { send: [7], wake: [...ones, 70] }),
    ]
    expect(runs.map((r) => r.syncWakeupMs.p99)).to.deep.equal([1, 1, 1])
    const combined = combineRuns(runs)
    expect(combined.eventsPerS).to.equal(2000)
    expect(combined.events).to.equal(7)
    expect(combined.sendMs).to.deep.equal({ count: 7, p50: 10, p95: 40, p99: 40, max: 40 })
    // 300 probes, 297 of them fast: the 99th percentile (the 297th) is still a fast one.
    expect(combined.syncWakeupMs.count).to.equal(300)
    expect(combined.syncWakeupMs.p99).to.equal(1)
    expect(combined.syncWakeupMs.max).to.equal(70)
    expect(combined.probesSent).to.equal(300)
    expect(combined.wallS).to.equal(60)
    expect(combined).not.to.have.property('samples')
  })

  it('should let a slow tail common to the runs reach the pooled p99', () => {
    const run = (slow: number) => loadRun(100, { send: [1], wake: [...Array.from({ length: 97 }, () => 2), slow, slow, slow] })
    const runs = [run(40), run(30), run(20)]
    expect(runs.map((r) => r.syncWakeupMs.p99)).to.deep.equal([40, 30, 20])
    // Pooled: 291 fast, then 20 ×3, 30 ×3, 40 ×3; the 297th of 300 is a 30.
    const combined = combineRuns(runs)
    expect(combined.syncWakeupMs.p99).to.equal(30)
    expect(combined.syncWakeupMs.p95).to.equal(2)
  })

  it('should sum errors, lost probes and hot-room sends over the runs', () => {
    const combined = combineRuns([
      loadRun(10, { send: [1, 2, 3, 4], hot: [3], wake: [] }, { errors: 2, probesLost: 1 }),
      loadRun(10, { send: [1, 2, 3, 4], hot: [3, 4, 4], wake: [] }, { errors: 1 }),
    ])
    expect(combined.errors).to.equal(3)
    expect(combined.probesLost).to.equal(1)
    expect(combined.hotRoomShare).to.equal(0.5)
    expect(combined.hotRoomSendMs).to.deep.equal({ count: 4, p50: 3, p95: 4, p99: 4, max: 4 })
  })

  it('should refuse no runs', () => {
    expect(() => combineRuns([])).to.throw(RangeError)
  })
})

describe('load generator: runLoad warm-up', () => {
  it('should count only the load after the warm-up, and say when that starts', async function () {
    this.timeout(20_000)
    const marks: { name: string; at: number }[] = []
    const mark = (name: string) => () => marks.push({ name, at: performance.now() })
    const answered: number[] = []
    const result = await httpBaseline({
      users: 4,
      rooms: 2,
      concurrency: 4,
      warmupS: 1,
      durationS: 1,
      idleS: 0,
      distribution: 'zipf',
      onMeasureStart: mark('measure'),
      onLoadEnd: mark('end'),
      progress: (line) => {
        if (/warm-up/.test(line)) mark('load')()
      },
    }, (txnId) => {
      if (!txnId.startsWith(probeTxnPrefix)) answered.push(performance.now())
    })
    expect(marks.map((m) => m.name)).to.deep.equal(['load', 'measure', 'end'])
    const [load, measure, end] = marks.map((m) => m.at) as [number, number, number]
    expect(measure - load).to.be.within(950, 1500)
    expect(end - measure).to.be.within(950, 1500)
    // The wall time and events/s are the counted second's, not the two seconds of load.
    expect(result.wallS).to.be.within(0.9, 1.5)
    // Counted: the load's sends answered after the warm-up (not the probe's). A send of each
    // sender in flight at a mark may fall on the other side: one that started in the warm-up
    // is not counted, one answered just before the mark but read after it is; the same at the
    // end. So up to one send per sender (4) at each of the two marks.
    const during = answered.filter((at) => at >= measure && at <= end).length
    expect(answered.filter((at) => at < measure).length).to.be.above(result.events / 4)
    expect(result.events).to.be.within(during - 8, during + 8)
    expect(result.eventsPerS).to.be.closeTo(result.events / result.wallS, result.eventsPerS * 0.1)
  })
})
