import { expect } from 'chai'
import type { Bus } from '../../../../storage/bus/bus.js'
import { createMemoryBus, MemoryBusHub } from '../../../../storage/bus/memory-bus.js'
import { silentLogger } from '../../../../storage/logger.js'
import { createIdGenerator, type MultiWriterIdGenerator } from '../../../../storage/streams/id-generator.js'
import { createNotifier, type Notifier } from '../../../../storage/streams/notifier.js'
import { createStreamTracker, type StreamTracker } from '../../../../storage/streams/stream-tracker.js'
import { createTestDatabase, type TestDatabase } from '../../../support/db.js'
import { createRoom, eventually, insertEventRow } from './stream-fixtures.js'

const log = silentLogger()

describe('Notifier', () => {
  let t: TestDatabase
  let hub: MemoryBusHub
  let buses: Bus[]
  let w1: MultiWriterIdGenerator
  let w2: MultiWriterIdGenerator
  let tracker: StreamTracker
  let notifier: Notifier
  let roomA: string
  let roomB: string

  async function bus(): Promise<Bus> {
    const b = createMemoryBus({ hub, log })
    await b.start()
    buses.push(b)
    return b
  }

  async function write(g: MultiWriterIdGenerator, room: string, options: { rollback?: boolean; hint?: boolean } = {}): Promise<bigint> {
    let id = 0n
    await g
      .transaction(async (trx, allocate) => {
        ;[id] = (await allocate(1, options.hint === false ? undefined : [room])) as [bigint]
        await insertEventRow(trx, room, id, g.writer)
        if (options.rollback) throw new Error('rolled back')
      })
      .catch((err: unknown) => {
        if (!options.rollback) throw err
      })
    return id
  }

  beforeEach(async () => {
    t = await createTestDatabase()
    hub = new MemoryBusHub()
    buses = []
    roomA = await createRoom(t.db)
    roomB = await createRoom(t.db)
    const options = { db: t.db, stream: 'events' as const, writers: ['w1', 'w2'], log, announceIntervalMs: 60_000 }
    w1 = await createIdGenerator({ ...options, writer: 'w1', bus: await bus() })
    w2 = await createIdGenerator({ ...options, writer: 'w2', bus: await bus() })
    tracker = createStreamTracker({ db: t.db, bus: await bus(), log })
    await tracker.start()
    notifier = createNotifier(tracker)
  })

  afterEach(async () => {
    await tracker.close()
    await w1.close()
    await w2.close()
    for (const b of buses) await b.close()
    await t.drop()
  })

  it('should wake a waiter on its room and not one on another room', async () => {
    const after = tracker.currentToken()
    const onA = notifier.wait({ rooms: new Set([roomA]), after, timeoutMs: 2000 })
    const onB = notifier.wait({ rooms: new Set([roomB]), after, timeoutMs: 300 })
    await write(w1, roomA)
    expect(await onA).to.equal('advanced')
    expect(await onB).to.equal('timeout')
  })

  it("should wake 'any' waiters on a room hint but not on an idle advance", async () => {
    const after = tracker.currentToken()
    const idle = notifier.wait({ rooms: 'any', after, timeoutMs: 300 })
    await write(w1, roomA, { rollback: true }) // advances w1 with an empty hint
    expect(await idle).to.equal('timeout')
    const any = notifier.wait({ rooms: 'any', after: tracker.currentToken(), timeoutMs: 2000 })
    await write(w2, roomB)
    expect(await any).to.equal('advanced')
  })

  it('should treat a missing hint as every room', async () => {
    const waiting = notifier.wait({ rooms: new Set([roomB]), after: tracker.currentToken(), timeoutMs: 2000 })
    await write(w1, roomA, { hint: false })
    expect(await waiting).to.equal('advanced')
  })

  it('should answer at once for an advance that happened before the call', async () => {
    const after = tracker.currentToken()
    const id = await write(w1, roomA)
    await eventually(() => tracker.positions().get('w1') === id, 'the tracker to see the write')
    expect(await notifier.wait({ rooms: new Set([roomA]), after, timeoutMs: 2000 })).to.equal('advanced')
    expect(await notifier.wait({ rooms: new Set([roomB]), after, timeoutMs: 100 })).to.equal('timeout')
  })

  it('should not wake for advances not past its token', async () => {
    await write(w1, roomA)
    await eventually(() => tracker.positions().get('w1') === w1.position(), 'the tracker')
    expect(await notifier.wait({ rooms: new Set([roomA]), after: tracker.currentToken(), timeoutMs: 150 })).to.equal('timeout')
  })

  it('should resolve aborted when the signal aborts', async () => {
    const controller = new AbortController()
    const waiting = notifier.wait({ rooms: new Set([roomA]), after: tracker.currentToken(), timeoutMs: 60_000, signal: controller.signal })
    controller.abort()
    expect(await waiting).to.equal('aborted')
    expect(await notifier.wait({ rooms: 'any', after: tracker.currentToken(), timeoutMs: 60_000, signal: controller.signal })).to.equal('aborted')
  })
})
