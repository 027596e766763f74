import { expect } from 'chai'
import { sql } from 'kysely'
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

  it('should name the rooms changed after a token from its history, and not guess beyond it', async () => {
    const before = tracker.currentToken()
    const a = await write(w1, roomA)
    await eventually(() => tracker.positions().get('w1') === a, 'the tracker to see the write to A')
    const between = tracker.currentToken()
    const b = await write(w2, roomB)
    await eventually(() => tracker.positions().get('w2') === b, 'the tracker to see the write to B')
    expect(notifier.roomsChangedAfter([roomA, roomB], before)).to.deep.equal(new Set([roomA, roomB]))
    expect(notifier.roomsChangedAfter([roomA, roomB], between)).to.deep.equal(new Set([roomB]))
    expect(notifier.roomsChangedAfter([roomA], between)).to.deep.equal(new Set())
    expect(notifier.roomsChangedAfter([roomA, roomB], tracker.currentToken())).to.deep.equal(new Set())
    // A notifier created now has no history of those writes.
    expect(createNotifier(tracker).roomsChangedAfter([roomA, roomB], before)).to.equal(undefined)
    // An advance without a hint may be any room.
    const beforeUnhinted = tracker.currentToken()
    const c = await write(w1, roomA, { hint: false })
    await eventually(() => tracker.positions().get('w1') === c, 'the tracker to see the unhinted write')
    expect(notifier.roomsChangedAfter([roomB], beforeUnhinted)).to.equal(undefined)
  })

  it('should count the rows a writer committed but never announced before dying as any room', async () => {
    const before = tracker.currentToken()
    const waiting = notifier.wait({ rooms: new Set([roomA]), after: before, timeoutMs: 3000 })
    await w2.close()
    const [{ id }] = (await sql<{ id: bigint }>`SELECT nextval('events_stream_seq') AS id`.execute(t.db)).rows as [{ id: bigint }]
    await insertEventRow(t.db, roomA, id, 'w2')
    w2 = await createIdGenerator({ db: t.db, stream: 'events', writers: ['w1', 'w2'], log, announceIntervalMs: 60_000, writer: 'w2', bus: await bus() })
    await eventually(() => tracker.positions().get('w2') === id, 'the tracker to see the restarted writer')
    expect(await waiting).to.equal('advanced')
    expect(notifier.roomsChangedAfter([roomA, roomB], before)).to.equal(undefined)
  })

  it('should not answer for rows the linear position ran over without an advance', async () => {
    const before = tracker.currentToken()
    await w2.close()
    // w2 commits a row in B and dies before announcing it; w1 moves on.
    const [{ id: deadId }] = (await sql<{ id: bigint }>`SELECT nextval('events_stream_seq') AS id`.execute(t.db)).rows as [{ id: bigint }]
    await insertEventRow(t.db, roomB, BigInt(deadId), 'w2')
    const a = await write(w1, roomA)
    await eventually(() => tracker.linearPosition() >= a, "the linear position to run over the dead writer's row")
    expect(tracker.positions().get('w2')! < BigInt(deadId)).to.equal(true)
    expect(notifier.roomsChangedAfter([roomA, roomB], before)).to.equal(undefined)
    expect(notifier.roomsChangedAfter([roomA, roomB], tracker.currentToken())).to.deep.equal(new Set())
  })

  it('should resolve aborted when the signal aborts', async () => {
    const controller = new AbortController()
    const waiting = notifier.wait({ rooms: new Set([roomA]), after: tracker.currentToken(), timeoutMs: 60_000, signal: controller.signal })
    controller.abort()
    expect(await waiting).to.equal('aborted')
    expect(await notifier.wait({ rooms: 'any', after: tracker.currentToken(), timeoutMs: 60_000, signal: controller.signal })).to.equal('aborted')
  })
})
