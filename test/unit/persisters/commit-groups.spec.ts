import { expect } from 'chai'
import fc from 'fast-check'
import { CommitGroups } from '../../../persisters/commit-groups.js'

/** Lets the event loop finish its turn (what CommitGroups waits for before starting a group). */
const turn = () => new Promise((resolve) => setImmediate(resolve))

/** A run that records its groups and finishes when the test says so. */
function gatedRun() {
  const groups: number[][] = []
  const gates: PromiseWithResolvers<void>[] = []
  return {
    groups,
    run: async (group: number[]) => {
      groups.push(group)
      const gate = Promise.withResolvers<void>()
      gates.push(gate)
      await gate.promise
      return group.map((n) => n * 10)
    },
    release: async (index: number) => {
      gates[index]?.resolve()
      await turn()
    },
  }
}

describe('CommitGroups', () => {
  it('should run work at once while fewer than `concurrency` groups run, grouping only what came in the same turn', async () => {
    const gated = gatedRun()
    const groups = new CommitGroups<number, number>({ concurrency: 2, maxWeight: 100, weight: () => 1, run: gated.run })
    const a = groups.submit(1)
    const b = groups.submit(2)
    expect(gated.groups, 'nothing runs before the turn ends').to.deep.equal([])
    await new Promise((resolve) => setImmediate(resolve))
    expect(gated.groups, 'the same turn: one group').to.deep.equal([[1, 2]])
    const c = groups.submit(3)
    await new Promise((resolve) => setImmediate(resolve))
    expect(gated.groups, 'a later turn with a free slot: at once, alone').to.deep.equal([[1, 2], [3]])
    await gated.release(0)
    await gated.release(1)
    expect(await Promise.all([a, b, c])).to.deep.equal([10, 20, 30])
  })

  it('should give everything that waited to the next group, within maxWeight', async () => {
    const gated = gatedRun()
    const groups = new CommitGroups<number, number>({ concurrency: 1, maxWeight: 5, weight: (n) => n, run: gated.run })
    const first = groups.submit(1)
    await new Promise((resolve) => setImmediate(resolve))
    const answers = [first, ...[2, 2, 1, 4, 9].map((n) => groups.submit(n))]
    expect(gated.groups).to.deep.equal([[1]])
    expect(groups.waiting).to.equal(5)
    await gated.release(0)
    expect(gated.groups).to.deep.equal([[1], [2, 2, 1]])
    await gated.release(1)
    expect(gated.groups.at(-1)).to.deep.equal([4])
    await gated.release(2)
    // Heavier than maxWeight on its own: still runs, alone.
    expect(gated.groups.at(-1)).to.deep.equal([9])
    await gated.release(3)
    expect(await Promise.all(answers)).to.deep.equal([10, 20, 20, 10, 40, 90])
    expect(groups.waiting).to.equal(0)
  })

  it('should start a group beside a running one only when minParallelWeight waits', async () => {
    const gated = gatedRun()
    const groups = new CommitGroups<number, number>({ concurrency: 3, maxWeight: 100, minParallelWeight: 5, weight: (n) => n, run: gated.run })
    const answers = [groups.submit(1)]
    await turn()
    expect(gated.groups, 'nothing runs: at once').to.deep.equal([[1]])
    answers.push(groups.submit(2), groups.submit(2))
    await turn()
    expect(gated.groups, 'weight 4 waits for the running group').to.deep.equal([[1]])
    expect(groups.waiting).to.equal(2)
    answers.push(groups.submit(1))
    await turn()
    expect(gated.groups, 'weight 5: a group of its own beside it').to.deep.equal([[1], [2, 2, 1]])
    answers.push(groups.submit(3))
    await turn()
    expect(gated.groups, 'weight 3 waits again').to.have.length(2)
    await gated.release(0)
    expect(gated.groups, 'a group still runs: the 3 keeps waiting').to.have.length(2)
    await gated.release(1)
    expect(gated.groups.at(-1), 'nothing runs: the 3 starts, alone').to.deep.equal([3])
    await gated.release(2)
    expect(await Promise.all(answers)).to.deep.equal([10, 20, 20, 10, 30])
  })

  it('should fail only the items of a group whose run rejects, and keep going', async () => {
    let calls = 0
    const groups = new CommitGroups<string, string>({
      concurrency: 1,
      maxWeight: 10,
      weight: () => 1,
      run: async (group) => {
        calls++
        if (group.includes('bad')) throw new Error('boom')
        return group.map((s) => s.toUpperCase())
      },
    })
    const ok = groups.submit('ok')
    await new Promise((resolve) => setImmediate(resolve))
    const [first, bad, other] = await Promise.allSettled([ok, groups.submit('bad'), groups.submit('fine')])
    expect(first).to.deep.equal({ status: 'fulfilled', value: 'OK' })
    expect(bad.status).to.equal('rejected')
    expect(other.status).to.equal('rejected')
    expect(await groups.submit('later')).to.equal('LATER')
    expect(calls).to.equal(3)
  })

  it('should gather the next group, after a heavy one, up to the weight or for a while; never after a light one', async () => {
    const gated = gatedRun()
    const groups = new CommitGroups<number, number>({ concurrency: 1, maxWeight: 100, gather: { ms: 100, weight: 5, after: 3 }, weight: (n) => n, run: gated.run })
    const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
    const answers = [groups.submit(1)]
    await turn()
    answers.push(groups.submit(1))
    await turn()
    // A light group (1 < after) ends: the waiting work runs at once.
    await gated.release(0)
    expect(gated.groups).to.deep.equal([[1], [1]])
    answers.push(groups.submit(3))
    await turn()
    await gated.release(1)
    expect(gated.groups.at(-1), 'after a light group, the next runs at once').to.deep.equal([3])
    answers.push(groups.submit(2))
    await turn()
    // A heavy group (3 ≥ after) ends: the next waits for weight 5 or for 100 ms.
    await gated.release(2)
    answers.push(groups.submit(2))
    await turn()
    expect(gated.groups, 'weight 4 of 5: gathering').to.have.length(3)
    answers.push(groups.submit(1))
    await turn()
    expect(gated.groups.at(-1), 'weight 5 gathered: runs').to.deep.equal([2, 2, 1])
    // Work keeps arriving through the wait: it runs out of time, and the next waits as long.
    let started = performance.now()
    await gated.release(3)
    for (const at of [10, 35, 65]) {
      await sleep(at - (performance.now() - started))
      answers.push(groups.submit(1))
    }
    await sleep(150 - (performance.now() - started))
    expect(gated.groups.at(-1), 'the wait ran out with work arriving').to.deep.equal([1, 1, 1])
    // A closed loop: everything came at once, and nothing in the wait's second half.
    answers.push(groups.submit(3))
    started = performance.now()
    await gated.release(4)
    await sleep(150)
    expect(gated.groups.at(-1)).to.deep.equal([3])
    expect(performance.now() - started, 'it waited the whole time').to.be.at.least(90)
    // So the next group waits only for the weight the last one had (3), and runs at once.
    answers.push(groups.submit(3))
    await gated.release(5)
    expect(gated.groups.at(-1), 'backing off: 3 is enough').to.deep.equal([3])
    // The back-off (one group) is over: the next waits for 5 again, in vain: a back-off of two.
    answers.push(groups.submit(3))
    started = performance.now()
    await gated.release(6)
    expect(gated.groups, 'waiting for 5 again').to.have.length(7)
    await sleep(150)
    expect(gated.groups.at(-1)).to.deep.equal([3])
    for (let i = 7; i < 9; i++) {
      answers.push(groups.submit(3))
      await gated.release(i)
      expect(gated.groups.at(-1), `backing off, group ${i + 1}`).to.deep.equal([3])
    }
    answers.push(groups.submit(3))
    await gated.release(9)
    expect(gated.groups, 'the back-off of two is over: waiting for 5').to.have.length(10)
    answers.push(groups.submit(2))
    await turn()
    expect(gated.groups.at(-1), 'filled: 5').to.deep.equal([3, 2])
    await gated.release(10)
    // A group heavier than `weight` asks the next for `weight` only.
    answers.push(groups.submit(9))
    await turn()
    answers.push(groups.submit(5))
    await gated.release(11)
    expect(gated.groups.at(-1), 'weight 5 of at most 5: runs at once').to.deep.equal([5])
    await gated.release(12)
    expect(await Promise.all(answers)).to.deep.equal([10, 10, 30, 20, 20, 10, 10, 10, 10, 30, 30, 30, 30, 30, 30, 20, 90, 50])
  })

  it('should not back off when a running group, not a wait, ended the gathering', async () => {
    const gated = gatedRun()
    const groups = new CommitGroups<number, number>({ concurrency: 2, maxWeight: 100, gather: { ms: 100, weight: 5, after: 3 }, weight: (n) => n, run: gated.run })
    const answers = [groups.submit(3)]
    await turn()
    answers.push(groups.submit(3))
    await turn()
    answers.push(groups.submit(1))
    await turn()
    expect(gated.groups, 'two groups run; 1 waits').to.deep.equal([[3], [3]])
    // A heavy group ends while the other runs: no gathering, the waiting 1 starts at once.
    await gated.release(0)
    expect(gated.groups.at(-1)).to.deep.equal([1])
    await gated.release(2)
    // The other heavy group ends with none running: its successor gathers for 5, not backed off.
    await gated.release(1)
    answers.push(groups.submit(3))
    await turn()
    expect(gated.groups, 'gathering for 5').to.have.length(3)
    answers.push(groups.submit(2))
    await turn()
    expect(gated.groups.at(-1)).to.deep.equal([3, 2])
    await gated.release(3)
    expect(await Promise.all(answers)).to.deep.equal([30, 30, 10, 30, 20])
  })

  it('should answer every item exactly once with its own result, never exceeding concurrency (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 1, max: 8 }), { minLength: 1, maxLength: 60 }),
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 1, max: 20 }),
        fc.integer({ min: 0, max: 30 }),
        fc.option(fc.record({ ms: fc.integer({ min: 0, max: 3 }), weight: fc.integer({ min: 1, max: 40 }), after: fc.integer({ min: 1, max: 8 }) }), { nil: undefined }),
        async (items, concurrency, maxWeight, minParallelWeight, gather) => {
          let running = 0
          let peak = 0
          const seen: number[] = []
          const groups = new CommitGroups<{ id: number; w: number }, number>({
            concurrency,
            maxWeight,
            minParallelWeight,
            ...(gather && { gather }),
            weight: (item) => item.w,
            run: async (group) => {
              running++
              peak = Math.max(peak, running)
              const weight = group.reduce((sum, item) => sum + item.w, 0)
              expect(group.length === 1 || weight <= maxWeight).to.equal(true)
              await new Promise((resolve) => setImmediate(resolve))
              running--
              seen.push(...group.map((item) => item.id))
              return group.map((item) => item.id * 2)
            },
          })
          const answers = await Promise.all(items.map((w, id) => groups.submit({ id, w })))
          expect(answers).to.deep.equal(items.map((_, id) => id * 2))
          expect([...seen].sort((a, b) => a - b)).to.deep.equal(items.map((_, id) => id))
          expect(peak).to.be.at.most(concurrency)
        },
      ),
      { numRuns: 100 },
    )
  })
})
