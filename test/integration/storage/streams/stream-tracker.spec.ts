import { expect } from 'chai'
import { sql } from 'kysely'
import { Registry } from 'prom-client'
import type { Bus } from '../../../../storage/bus/bus.js'
import { createMemoryBus, MemoryBusHub } from '../../../../storage/bus/memory-bus.js'
import { silentLogger } from '../../../../storage/logger.js'
import { createIdGenerator, type MultiWriterIdGenerator } from '../../../../storage/streams/id-generator.js'
import { ensureInstanceId } from '../../../../storage/streams/instances.js'
import { parseRoomStreamToken, RoomStreamToken } from '../../../../storage/streams/room-stream-token.js'
import { createStreamTracker, type StreamTracker } from '../../../../storage/streams/stream-tracker.js'
import { createTestDatabase, type TestDatabase } from '../../../support/db.js'
import { capturingLogger, createRoom, deferred, eventually, insertEventRow } from './stream-fixtures.js'

const log = silentLogger()

describe('StreamTracker', () => {
  let t: TestDatabase
  let hub: MemoryBusHub
  let buses: Bus[]
  let closers: (() => Promise<void>)[]
  let roomId: string

  async function bus(): Promise<Bus> {
    const b = createMemoryBus({ hub, log })
    await b.start()
    buses.push(b)
    return b
  }

  async function writer(name: string, writers = ['w1', 'w2']): Promise<MultiWriterIdGenerator> {
    const g = await createIdGenerator({ db: t.db, stream: 'events', writer: name, writers, bus: await bus(), log, announceIntervalMs: 60_000 })
    closers.push(() => g.close())
    return g
  }

  async function tracker(options: { withBus?: boolean; pollIntervalMs?: number; registry?: Registry; log?: typeof log } = {}): Promise<StreamTracker> {
    const tr = createStreamTracker({
      db: t.db,
      bus: options.withBus === false ? undefined : await bus(),
      log: options.log ?? log,
      pollIntervalMs: options.pollIntervalMs ?? 250,
      registry: options.registry,
    })
    closers.push(() => tr.close())
    await tr.start()
    return tr
  }

  async function write(g: MultiWriterIdGenerator, n: number, rooms?: string[]): Promise<bigint[]> {
    return g.transaction(async (trx, allocate) => {
      const ids = await allocate(n, rooms)
      for (const id of ids) await insertEventRow(trx, roomId, id, g.writer)
      return ids
    })
  }

  beforeEach(async () => {
    t = await createTestDatabase()
    hub = new MemoryBusHub()
    buses = []
    closers = []
    roomId = await createRoom(t.db)
  })

  afterEach(async () => {
    for (const close of closers.reverse()) await close()
    for (const b of buses) await b.close()
    await t.drop()
  })

  it('should load positions and writer IDs at start and follow POSITION messages', async () => {
    const w1 = await writer('w1')
    const w2 = await writer('w2')
    const tr = await tracker()
    expect(tr.mode).to.equal('push')
    expect(tr.positions()).to.deep.equal(new Map([['w1', w1.position()], ['w2', w2.position()]]))
    expect(tr.writerId('w1')).to.be.a('number')
    const advances: [string, bigint, bigint, readonly string[] | undefined][] = []
    tr.onAdvance((...args) => advances.push(args))
    const ids = await write(w1, 2, [roomId])
    await eventually(() => tr.positions().get('w1') === ids[1], 'the tracker to follow w1')
    expect(advances[0]).to.deep.equal(['w1', ids[0]! - 1n, ids[1], [roomId]])
    await eventually(() => tr.linearPosition() === ids[1], 'the idle w2 to follow and the linear position to move')
  })

  it('should serve a vector token where a slow writer holds back only its own entry', async () => {
    const w1 = await writer('w1')
    const w2 = await writer('w2')
    const tr = await tracker()
    const hold = deferred()
    const held = deferred<bigint>()
    const slow = w1.transaction(async (trx, allocate) => {
      const [id] = await allocate(1)
      held.resolve(id!)
      await insertEventRow(trx, roomId, id!, 'w1')
      await hold.promise
    })
    const slowId = await held.promise
    const fast = await write(w2, 3)
    await eventually(() => tr.positions().get('w2') === fast[2], 'w2 to advance')
    const token = tr.currentToken()
    expect(token.stream).to.equal(slowId - 1n)
    expect(token.positionOf(tr.writerId('w2')!)).to.equal(fast[2])
    expect(tr.linearPosition()).to.equal(slowId - 1n)
    expect(tr.covers(RoomStreamToken.live(slowId))).to.equal(false)
    const waiting = tr.waitFor(RoomStreamToken.live(fast[2]!), 5000)
    hold.resolve()
    await slow
    expect(await waiting).to.equal(true)
    expect(tr.covers(RoomStreamToken.live(fast[2]!))).to.equal(true)
  })

  it('should catch up from stream_positions on a gap and pass no room hint', async () => {
    const w1 = await writer('w1')
    const tr = await tracker()
    const advances: (readonly string[] | undefined)[] = []
    tr.onAdvance((_w, _p, _n, rooms) => advances.push(rooms))
    // Positions stored while the tracker's copy of the message is lost.
    await t.db.insertInto('stream_positions').values({ stream_name: 'events', instance_name: 'w2', stream_id: 500n }).execute()
    await sql`SELECT setval('events_stream_seq', 1000)`.execute(t.db)
    const sender = await bus()
    await sender.publish({ type: 'POSITION', stream: 'events', writer: 'w1', prev: 900n, next: 950n, rooms: ['!x:test'] })
    await eventually(() => tr.positions().get('w1') === 950n, 'the gap to be filled')
    expect(tr.positions().get('w2')).to.equal(500n)
    expect(advances.every((rooms) => rooms === undefined)).to.equal(true)
    expect(w1.position() <= 1000n).to.equal(true)
  })

  it('should poll stream_positions while the bus is down and return to push when it is back', async () => {
    const registry = new Registry()
    const { log: captured, lines } = capturingLogger()
    const w1 = await writer('w1', ['w1'])
    const tr = await tracker({ pollIntervalMs: 20, registry, log: captured })
    hub.disconnect()
    expect(tr.mode).to.equal('polling')
    expect((await registry.getSingleMetricAsString('myelin_stream_tracker_polling'))).to.include('myelin_stream_tracker_polling{stream="events"} 1')
    const ids = await write(w1, 2)
    await eventually(() => tr.positions().get('w1') === ids[1], 'polling to find the new position')
    expect(lines.some((l) => l.level === 40 && l.msg === 'bus down: polling stream_positions')).to.equal(true)
    hub.reconnect()
    expect(tr.mode).to.equal('push')
    expect(await registry.getSingleMetricAsString('myelin_stream_tracker_polling')).to.include('{stream="events"} 0')
    const more = await write(w1, 1)
    await eventually(() => tr.positions().get('w1') === more[0], 'push to deliver again')
    expect(lines.some((l) => l.msg === 'bus up: stream positions pushed again')).to.equal(true)
  })

  it('should poll without a bus', async () => {
    const w1 = await writer('w1', ['w1'])
    const tr = await tracker({ withBus: false, pollIntervalMs: 20 })
    expect(tr.mode).to.equal('polling')
    const ids = await write(w1, 1)
    await eventually(() => tr.positions().get('w1') === ids[0], 'polling')
  })

  it('should forget writers whose rows reconciliation removed', async () => {
    await writer('w1')
    await writer('w2')
    const tr = await tracker({ pollIntervalMs: 20 })
    await writer('w3', ['w1', 'w3'])
    hub.disconnect()
    await eventually(() => !tr.positions().has('w2') && tr.positions().has('w3'), 'w2 forgotten and w3 known')
  })

  it('should clamp a token from the future to the highest allocated ID', async () => {
    await sql`SELECT setval('events_stream_seq', 50)`.execute(t.db)
    await writer('w1')
    const tr = await tracker()
    const id = await ensureInstanceId(t.db, 'w1')
    expect(tr.linearPosition()).to.equal(50n)
    expect((await tr.clamp(parseRoomStreamToken(`m10~${id}.99999`))).toString()).to.equal(`m10~${id}.50`)
    expect((await tr.clamp(parseRoomStreamToken('s88888'))).toString()).to.equal('s50')
    expect((await tr.clamp(parseRoomStreamToken('t3-99999'))).toString()).to.equal('t3-50')
    const current = tr.currentToken()
    expect(await tr.clamp(current)).to.equal(current)
  })

  it('should time out waiting for a token nobody reaches, and resolve false on close', async () => {
    await writer('w1')
    const tr = await tracker()
    expect(await tr.waitFor(RoomStreamToken.live(10_000n), 30)).to.equal(false)
    const pending = tr.waitFor(RoomStreamToken.live(10_000n), 60_000)
    await tr.close()
    expect(await pending).to.equal(false)
  })

  it('should extend a stuck linear position over committed rows', async () => {
    const w1 = await writer('w1')
    const w2 = await writer('w2')
    // w2 commits ID 2 and dies before storing or announcing its position.
    await w2.close()
    const [{ id: deadId }] = (await sql<{ id: bigint }>`SELECT nextval('events_stream_seq') AS id`.execute(t.db)).rows as [{ id: bigint }]
    await insertEventRow(t.db, roomId, deadId, 'w2')
    const ids = await write(w1, 4)
    const tr = await tracker({ withBus: false, pollIntervalMs: 20 })
    expect(tr.positions().get('w2')).to.equal(1n)
    const before = tr.currentToken()
    expect(tr.ranOverUnannounced(before)).to.equal(false)
    await eventually(() => tr.linearPosition() === ids[3], 'the linear position to run over committed rows')
    expect(tr.positions().get('w2')).to.equal(1n)
    expect(tr.currentToken().toString()).to.equal(`s${ids[3]}`)
    // The dead writer's row lies after `before`, and no advance announced it.
    expect(tr.ranOverUnannounced(before)).to.equal(true)
    expect(tr.ranOverUnannounced(tr.currentToken())).to.equal(false)
  })

  it('should not extend the linear position over an uncommitted ID', async () => {
    const w1 = await writer('w1')
    const w2 = await writer('w2')
    await w2.close()
    await sql`SELECT nextval('events_stream_seq')`.execute(t.db) // w2's ID, never committed
    const ids = await write(w1, 3)
    const tr = await tracker({ withBus: false, pollIntervalMs: 20 })
    await new Promise((resolve) => setTimeout(resolve, 150))
    expect(tr.linearPosition()).to.equal(1n)
    expect(tr.positions().get('w1')).to.equal(ids[2])
  })
})
