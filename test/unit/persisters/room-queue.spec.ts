import { expect } from 'chai'
import { RoomQueue } from '../../../persisters/room-queue.js'

interface Item {
  readonly id: number
  readonly kind: 'a' | 'b'
  readonly weight: number
}

/** A queue whose batches wait for the test to release them, recording what ran. */
function harness(options: { roomConcurrency?: number; maxBatchWeight?: number } = {}) {
  const batches: { roomId: string; ids: number[] }[] = []
  const running = new Set<string>()
  let maxParallel = 0
  let overlapInRoom = false
  const releases: (() => void)[] = []
  const errors: unknown[] = []
  const queue = new RoomQueue<Item>({
    roomConcurrency: options.roomConcurrency ?? 4,
    maxBatchWeight: options.maxBatchWeight ?? 100,
    weight: (item) => item.weight,
    compatible: (first, next) => first.kind === next.kind,
    run: async (roomId, batch) => {
      if (running.has(roomId)) overlapInRoom = true
      running.add(roomId)
      maxParallel = Math.max(maxParallel, running.size)
      batches.push({ roomId, ids: batch.map((i) => i.id) })
      await new Promise<void>((resolve) => releases.push(resolve))
      running.delete(roomId)
      if (batch.some((i) => i.id < 0)) throw new Error('boom')
    },
    onError: (_roomId, err) => errors.push(err),
  })
  const releaseAll = async () => {
    while (releases.length > 0 || queue.activeRooms > 0) {
      releases.splice(0).forEach((release) => release())
      await new Promise((resolve) => setImmediate(resolve))
    }
  }
  return { queue, batches, releaseAll, errors, stats: () => ({ maxParallel, overlapInRoom }) }
}

const item = (id: number, kind: 'a' | 'b' = 'a', weight = 1): Item => ({ id, kind, weight })

describe('RoomQueue', () => {
  it('should batch what queued up while a room was busy, in push order', async () => {
    const h = harness()
    h.queue.push('!r', item(1))
    h.queue.push('!r', item(2))
    h.queue.push('!r', item(3))
    await new Promise((resolve) => setImmediate(resolve))
    h.queue.push('!r', item(4))
    h.queue.push('!r', item(5))
    expect(h.queue.pendingFor('!r')).to.equal(2)
    await h.releaseAll()
    expect(h.batches.map((b) => b.ids)).to.deep.equal([[1, 2, 3], [4, 5]])
    expect(h.stats().overlapInRoom).to.equal(false)
    expect(h.queue.activeRooms).to.equal(0)
    expect(h.queue.pendingItems).to.equal(0)
  })

  it('should cap a batch by weight but let a single heavy item through', async () => {
    const h = harness({ maxBatchWeight: 10 })
    for (const [id, w] of [[1, 4], [2, 4], [3, 4], [4, 25], [5, 1]] as const) h.queue.push('!r', item(id, 'a', w))
    await h.releaseAll()
    expect(h.batches.map((b) => b.ids)).to.deep.equal([[1, 2], [3], [4], [5]])
  })

  it('should never mix incompatible items in a batch', async () => {
    const h = harness()
    for (const [id, kind] of [[1, 'a'], [2, 'a'], [3, 'b'], [4, 'a']] as const) h.queue.push('!r', item(id, kind))
    await h.releaseAll()
    expect(h.batches.map((b) => b.ids)).to.deep.equal([[1, 2], [3], [4]])
  })

  it('should run different rooms in parallel up to the concurrency bound', async () => {
    const h = harness({ roomConcurrency: 2 })
    for (let i = 0; i < 6; i++) h.queue.push(`!r${i}`, item(i))
    await new Promise((resolve) => setImmediate(resolve))
    expect(h.batches).to.have.length(2)
    expect(h.queue.activeRooms).to.equal(6)
    await h.releaseAll()
    expect(h.batches).to.have.length(6)
    expect(h.stats().maxParallel).to.equal(2)
  })

  it('should report a failing batch and keep serving the room', async () => {
    const h = harness()
    h.queue.push('!r', item(-1))
    await new Promise((resolve) => setImmediate(resolve))
    h.queue.push('!r', item(2))
    await h.releaseAll()
    expect(h.errors).to.have.length(1)
    expect(h.batches.map((b) => b.ids)).to.deep.equal([[-1], [2]])
  })

  it('should resolve drain only after every pushed item ran', async () => {
    const h = harness()
    h.queue.push('!a', item(1))
    h.queue.push('!b', item(2))
    let drained = false
    const drain = h.queue.drain().then(() => {
      drained = true
    })
    await new Promise((resolve) => setImmediate(resolve))
    expect(drained).to.equal(false)
    await h.releaseAll()
    await drain
    expect(drained).to.equal(true)
  })
})
