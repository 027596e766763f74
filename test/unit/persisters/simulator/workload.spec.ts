import { expect } from 'chai'
import fc from 'fast-check'
import {
  createArrivals,
  createRng,
  createRoomSampler,
  parseTraceCsv,
  traceActivity,
  uniformActivity,
  zipfActivity,
  zipfTopShare,
} from '../../../../persisters/simulator/workload.js'

describe('simulator workload', () => {
  describe('createRng', () => {
    it('should repeat its sequence for a seed and differ between seeds', () => {
      const a = createRng(42)
      const b = createRng(42)
      const c = createRng(43)
      const seqA = Array.from({ length: 100 }, a)
      expect(Array.from({ length: 100 }, b)).to.deep.equal(seqA)
      expect(Array.from({ length: 100 }, c)).to.not.deep.equal(seqA)
    })

    it('should pin the first outputs of seed 1 (the simulator\'s default runs depend on them)', () => {
      const rng = createRng(1)
      const first = Array.from({ length: 3 }, () => Math.floor(rng() * 4294967296))
      expect(first).to.deep.equal(pinnedSeed1)
    })

    it('should stay in [0, 1) and spread evenly over 10 buckets', () => {
      fc.assert(
        fc.property(fc.integer({ min: 0, max: 0xffffffff }), (seed) => {
          const rng = createRng(seed)
          const buckets = new Array<number>(10).fill(0)
          const n = 20_000
          let outside = 0
          for (let i = 0; i < n; i++) {
            const x = rng()
            if (!(x >= 0 && x < 1)) outside++
            else buckets[Math.floor(x * 10)]! += 1
          }
          expect(outside).to.equal(0)
          // chi-square with 9 degrees of freedom: P(> 40) is about 1e-5
          const chi = buckets.reduce((sum, count) => sum + (count - n / 10) ** 2 / (n / 10), 0)
          expect(chi).to.be.below(40)
        }),
        { numRuns: 20 },
      )
    })
  })

  describe('activities', () => {
    it('should build normalized Zipf weights in rank order with the analytic top share', () => {
      const activity = zipfActivity(1000, 1.2)
      let sum = 0
      for (let i = 0; i < 1000; i++) {
        sum += activity.weights[i]!
        if (i > 0) expect(activity.weights[i]!).to.be.below(activity.weights[i - 1]!)
      }
      expect(sum).to.be.closeTo(1, 1e-9)
      expect(activity.weights[0]).to.be.closeTo(zipfTopShare(1000, 1.2), 1e-12)
      expect(activity.weights[1]! / activity.weights[0]!).to.be.closeTo(2 ** -1.2, 1e-12)
      expect(activity.roomIds[0]).to.equal('!room0:sim')
      expect(activity.roomIds[999]).to.equal('!room999:sim')
    })

    it('should give Zipf exponent 0 the same weights as uniform', () => {
      const zipf = zipfActivity(50, 0)
      const uniform = uniformActivity(50)
      for (let i = 0; i < 50; i++) expect(zipf.weights[i]).to.be.closeTo(uniform.weights[i]!, 1e-15)
    })

    it('should reject bad room counts and exponents', () => {
      expect(() => uniformActivity(0)).to.throw(RangeError, /positive integer/)
      expect(() => zipfActivity(10, -1)).to.throw(RangeError, /exponent/)
      expect(() => zipfActivity(1.5, 1)).to.throw(RangeError, /positive integer/)
    })

    it('should sort a trace hottest first, keeping real room IDs and trace order on ties', () => {
      const activity = traceActivity(
        [
          { roomId: '!a:x', events: 10 },
          { roomId: '!b:x', events: 30 },
          { roomId: '!c:x', events: 10 },
          { roomId: '!d:x', events: 0 },
        ],
        'test',
      )
      expect(activity.roomIds).to.deep.equal(['!b:x', '!a:x', '!c:x', '!d:x'])
      expect(Array.from(activity.weights)).to.deep.equal([0.6, 0.2, 0.2, 0])
    })

    it('should reject traces without events, with duplicates or with bad counts', () => {
      expect(() => traceActivity([], 't')).to.throw(/no rooms/)
      expect(() => traceActivity([{ roomId: '!a:x', events: 0 }], 't')).to.throw(/no events/)
      expect(() => traceActivity([{ roomId: '!a:x', events: 1 }, { roomId: '!a:x', events: 2 }], 't')).to.throw(/twice/)
      expect(() => traceActivity([{ roomId: '!a:x', events: 1.5 }], 't')).to.throw(/invalid event count/)
    })
  })

  describe('parseTraceCsv', () => {
    it('should read the header and rows, tolerating CRLF, blank lines and spaces', () => {
      const rows = parseTraceCsv('room_id,events\r\n!a:example.org, 12\r\n\r\n  !b:example.org:8448,3\n', 'f.csv')
      expect(rows).to.deep.equal([
        { roomId: '!a:example.org', events: 12 },
        { roomId: '!b:example.org:8448', events: 3 },
      ])
    })

    it('should name the file and line of a malformed row', () => {
      expect(() => parseTraceCsv('room_id,events\n!a:x,1\n!b:x,many\n', 'f.csv')).to.throw(RangeError, /f\.csv:3: expected ROOM_ID,EVENT_COUNT/)
      expect(() => parseTraceCsv('room_id,events\n!a:x,-1\n', 'f.csv')).to.throw(RangeError, /f\.csv:2/)
      expect(() => parseTraceCsv('room,count\n!a:x,1\n', 'f.csv')).to.throw(RangeError, /f\.csv:1: expected the header/)
      expect(() => parseTraceCsv('\n\n', 'f.csv')).to.throw(RangeError, /empty trace/)
    })
  })

  describe('createRoomSampler', () => {
    it('should draw each room with its weight', () => {
      const weights = new Float64Array([0.5, 0.25, 0.125, 0.0625, 0.0625, 0])
      const pick = createRoomSampler(weights, createRng(9))
      const counts = new Array<number>(weights.length).fill(0)
      const n = 200_000
      for (let i = 0; i < n; i++) counts[pick()]! += 1
      expect(counts[5]).to.equal(0)
      weights.forEach((w, i) => {
        const sd = Math.sqrt(n * w * (1 - w))
        expect(Math.abs(counts[i]! - n * w), `room ${i}`).to.be.at.most(5 * sd)
      })
    })

    it('should only return rooms with a positive weight, for arbitrary weights', () => {
      fc.assert(
        fc.property(fc.array(fc.oneof(fc.constant(0), fc.double({ min: 0.001, max: 100, noNaN: true })), { minLength: 1, maxLength: 30 }), fc.integer(), (raw, seed) => {
          fc.pre(raw.some((w) => w > 0))
          const pick = createRoomSampler(Float64Array.from(raw), createRng(seed))
          for (let i = 0; i < 300; i++) {
            const room = pick()
            if (!(room >= 0 && room < raw.length && raw[room]! > 0)) expect.fail(`drew room ${room} of ${JSON.stringify(raw)}`)
          }
        }),
        { numRuns: 200 },
      )
    })
  })

  describe('createArrivals', () => {
    const countPerSecond = (burstiness: number, seed: number): number[] => {
      const next = createArrivals({ ratePerS: 200, durationS: 200, burstiness, burstPeriodS: 1 }, createRng(seed))
      const counts = new Array<number>(200).fill(0)
      let previous = 0
      let disordered = 0
      for (let t = next(); t !== Infinity; t = next()) {
        if (t < previous || t >= 200_000) disordered++
        previous = t
        counts[Math.floor(t / 1000)]! += 1
      }
      expect(disordered).to.equal(0)
      expect(next()).to.equal(Infinity)
      return counts
    }
    const stats = (counts: number[]): { mean: number; dispersion: number } => {
      const mean = counts.reduce((a, b) => a + b, 0) / counts.length
      const variance = counts.reduce((a, b) => a + (b - mean) ** 2, 0) / (counts.length - 1)
      return { mean, dispersion: variance / mean }
    }

    it('should keep the mean rate for every burstiness', () => {
      for (const burstiness of [0, 0.5, 1]) {
        const { mean } = stats(countPerSecond(burstiness, 3))
        // 40,000 expected arrivals; bursts of ~1 s add variance, so allow 8%
        expect(mean, `burstiness ${burstiness}`).to.be.closeTo(200, 16)
      }
    })

    it('should be Poisson at burstiness 0 and more dispersed as burstiness grows', () => {
      const poisson = stats(countPerSecond(0, 5)).dispersion
      const half = stats(countPerSecond(0.5, 5)).dispersion
      const full = stats(countPerSecond(1, 5)).dispersion
      expect(poisson).to.be.closeTo(1, 0.4)
      expect(half).to.be.above(poisson * 3)
      expect(full).to.be.above(half)
    })
  })
})

/** From an independent Python transcription of the reference xoshiro128** C code with the same seeding. */
const pinnedSeed1 = [2442144158, 3238099751, 3819917871]
