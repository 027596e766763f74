import { expect } from 'chai'
import {
  builtInCalibration,
  maxThroughputPerS,
  parallelCapacity,
  readCalibration,
  roomMaxThroughputPerS,
  transactionWorkMs,
} from '../../../../persisters/simulator/model.js'
import type { ServiceModel } from '../../../../persisters/simulator/model.js'

const model: ServiceModel = { txnFixedMs: 2, perEventMs: 0.4, maxBatch: 100, concurrency: 4, parallelEfficiency: 0.25, source: 'test' }
const files = (content: Record<string, string>) => (path: string): string => {
  const text = content[path]
  if (text === undefined) throw Object.assign(new Error(`ENOENT: no such file, open '${path}'`), { code: 'ENOENT' })
  return text
}

describe('simulator model', () => {
  it('should cost a transaction its fixed cost plus a cost per event', () => {
    expect(transactionWorkMs(model, 1)).to.be.closeTo(2.4, 1e-12)
    expect(transactionWorkMs(model, 100)).to.be.closeTo(42, 1e-12)
  })

  it('should share capacity: 1 + (k - 1) × efficiency, capped at the concurrency', () => {
    expect(parallelCapacity(model, 0)).to.equal(0)
    expect(parallelCapacity(model, 1)).to.equal(1)
    expect(parallelCapacity(model, 4)).to.equal(1.75)
    expect(parallelCapacity(model, 9)).to.equal(1.75)
    expect(maxThroughputPerS(model)).to.be.closeTo((1.75 * 100 * 1000) / 42, 1e-9)
    expect(roomMaxThroughputPerS(model)).to.be.closeTo(100_000 / 42, 1e-9)
  })

  describe('readCalibration', () => {
    it('should read persister figures from a benchmark results file and name it', () => {
      const calibration = readCalibration('/r.json', {
        readFile: files({ '/r.json': JSON.stringify({ persister: { txn_fixed_ms: 1.5, per_event_ms: 0.05, parallel_efficiency: 0.4 }, other: 1 }) }),
      })
      expect(calibration).to.deep.equal({ txnFixedMs: 1.5, perEventMs: 0.05, parallelEfficiency: 0.4, source: '/r.json' })
    })

    it('should default the parallel efficiency when the file has none', () => {
      const calibration = readCalibration('/r.json', {
        readFile: files({ '/r.json': JSON.stringify({ persister: { txn_fixed_ms: 1, per_event_ms: 0 } }) }),
      })
      expect(calibration.parallelEfficiency).to.equal(builtInCalibration.parallelEfficiency)
      expect(calibration.perEventMs).to.equal(0)
    })

    it('should fall back to the built-in figures and say why', () => {
      const missing = readCalibration('/none.json', { readFile: files({}) })
      expect(missing).to.include({ txnFixedMs: 2, perEventMs: 0.4 })
      expect(missing.source).to.match(/^built-in defaults .*\/none\.json does not exist/)
      const partial = readCalibration('/r.json', { readFile: files({ '/r.json': '{"persister":{"txn_fixed_ms":-1,"per_event_ms":0.1}}' }) })
      expect(partial.source).to.match(/has no valid persister\.txn_fixed_ms/)
      const broken = readCalibration('/r.json', { readFile: files({ '/r.json': '{not json' }) })
      expect(broken.source).to.match(/is unreadable/)
    })

    it('should throw instead when the file was asked for explicitly', () => {
      expect(() => readCalibration('/none.json', { required: true, readFile: files({}) })).to.throw(/calibration file \/none\.json does not exist/)
      expect(() =>
        readCalibration('/r.json', { required: true, readFile: files({ '/r.json': '{"persister":{}}' }) }),
      ).to.throw(/has no valid/)
    })
  })
})
