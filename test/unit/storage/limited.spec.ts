import { expect } from 'chai'
import fc from 'fast-check'
import { forEachLimited } from '../../../storage/limited.js'

describe('forEachLimited', () => {
  it('should call fn once per item with its index, never more than `limit` at a time (property)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.integer({ min: 0, max: 3 }), { maxLength: 40 }), fc.integer({ min: 1, max: 6 }), async (delays, limit) => {
        let running = 0
        let peak = 0
        const calls: [number, number][] = []
        await forEachLimited(delays, limit, async (delay, index) => {
          running++
          peak = Math.max(peak, running)
          calls.push([delay, index])
          for (let i = 0; i < delay; i++) await new Promise((resolve) => setImmediate(resolve))
          running--
        })
        expect(calls, 'every item once, started in order').to.deep.equal(delays.map((delay, index) => [delay, index]))
        expect(peak).to.be.at.most(limit)
        if (delays.length >= limit && delays.every((d) => d > 0)) expect(peak, 'the limit is used').to.equal(limit)
        expect(running).to.equal(0)
      }),
      { numRuns: 100 },
    )
  })

  it('should reject with the first failure, the failing call starting no further item', async () => {
    const started: number[] = []
    const failing = forEachLimited([0, 1, 2, 3], 1, async (item) => {
      started.push(item)
      await new Promise((resolve) => setImmediate(resolve))
      if (item === 1) throw new Error(`item ${item} failed`)
    })
    const error = await failing.then(() => undefined, (err: unknown) => err)
    expect(error).to.be.instanceOf(Error).with.property('message', 'item 1 failed')
    expect(started).to.deep.equal([0, 1])
  })
})
