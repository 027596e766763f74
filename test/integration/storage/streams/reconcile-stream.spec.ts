import { expect } from 'chai'
import { sql } from 'kysely'
import type { BusMessage } from '../../../../storage/bus/bus-message.js'
import { createMemoryBus, MemoryBusHub } from '../../../../storage/bus/memory-bus.js'
import { silentLogger } from '../../../../storage/logger.js'
import { createIdGenerator, type MultiWriterIdGenerator } from '../../../../storage/streams/id-generator.js'
import { readMaxAllocated } from '../../../../storage/streams/stream-sequence.js'
import { createTestDatabase, type TestDatabase } from '../../../support/db.js'
import { capturingLogger, createRoom, eventually, insertEventRow } from './stream-fixtures.js'

describe('startup reconciliation (createIdGenerator)', () => {
  let t: TestDatabase
  let generators: MultiWriterIdGenerator[]

  beforeEach(async () => {
    t = await createTestDatabase()
    generators = []
  })

  afterEach(async () => {
    for (const g of generators) await g.close()
    await t.drop()
  })

  async function start(writer: string, writers: string[], stream: 'events' | 'backfill' = 'events', log = silentLogger()) {
    const g = await createIdGenerator({ db: t.db, stream, writer, writers, log, announceIntervalMs: 60_000 })
    generators.push(g)
    return g
  }

  async function setPosition(writer: string, position: bigint, stream = 'events'): Promise<void> {
    await t.db
      .insertInto('stream_positions')
      .values({ stream_name: stream, instance_name: writer, stream_id: position })
      .onConflict((oc) => oc.columns(['stream_name', 'instance_name']).doUpdateSet({ stream_id: position }))
      .execute()
  }

  async function stored(stream = 'events'): Promise<Record<string, bigint>> {
    const rows = await t.db.selectFrom('stream_positions').selectAll().where('stream_name', '=', stream).execute()
    return Object.fromEntries(rows.map((row) => [row.instance_name, BigInt(row.stream_id)]))
  }

  it('should advance a sequence that is behind the events table and warn', async () => {
    const room = await createRoom(t.db)
    await insertEventRow(t.db, room, 50n, 'old')
    const { log, lines } = capturingLogger()
    const g = await start('w1', ['w1'], 'events', log)
    expect(await readMaxAllocated(t.db, 'events')).to.equal(50n)
    expect(lines.some((l) => l.level === 40 && String(l.msg).includes('behind the events table'))).to.equal(true)
    const [id] = await g.transaction((_trx, allocate) => allocate(1))
    expect(id).to.equal(51n)
  })

  it('should advance the backfill sequence past the lowest negative stream ordering', async () => {
    const room = await createRoom(t.db)
    await insertEventRow(t.db, room, -40n, 'old')
    await insertEventRow(t.db, room, 70n, 'old')
    const g = await start('w1', ['w1'], 'backfill')
    expect(await readMaxAllocated(t.db, 'backfill')).to.equal(40n)
    expect(await g.transaction((_trx, allocate) => allocate(2))).to.deep.equal([-41n, -42n])
  })

  it('should clamp stored positions ahead of the sequence, warn and keep starting', async () => {
    await sql`SELECT setval('events_stream_seq', 100)`.execute(t.db)
    await setPosition('w1', 180n)
    await setPosition('w2', 90n)
    await setPosition('w3', 150n)
    const { log, lines } = capturingLogger()
    const g = await start('w2', ['w1', 'w2', 'w3'], 'events', log)
    expect(await stored()).to.deep.equal({ w1: 100n, w2: 100n, w3: 100n })
    const warning = lines.find((l) => String(l.msg).includes('ahead of the sequence'))
    expect(warning?.level).to.equal(40)
    expect(warning?.ahead).to.deep.equal([
      { writer: 'w1', position: '180' },
      { writer: 'w3', position: '150' },
    ])
    const [id] = await g.transaction((_trx, allocate) => allocate(1))
    expect(id).to.equal(101n)
  })

  it('should delete positions of writers no longer configured, for this stream only', async () => {
    await setPosition('gone', 1n)
    await setPosition('w1', 1n)
    await setPosition('gone', 1n, 'backfill')
    await start('w1', ['w1', 'w2'])
    expect(Object.keys(await stored())).to.deep.equal(['w1'])
    expect(Object.keys(await stored('backfill'))).to.deep.equal(['gone'])
  })

  it('should start a new writer at the linear position, then advance it when idle', async () => {
    await sql`SELECT setval('events_stream_seq', 30)`.execute(t.db)
    await setPosition('w1', 10n)
    await setPosition('w2', 20n)
    const hub = new MemoryBusHub()
    const spy = createMemoryBus({ hub })
    const writerBus = createMemoryBus({ hub })
    await Promise.all([spy.start(), writerBus.start()])
    const messages: BusMessage[] = []
    spy.subscribe((m) => messages.push(m))
    try {
      const g = await createIdGenerator({ db: t.db, stream: 'events', writer: 'w3', writers: ['w1', 'w2', 'w3'], bus: writerBus, log: silentLogger() })
      generators.push(g)
      await eventually(() => messages.some((m) => m.type === 'POSITION' && m.writer === 'w3'), 'the first announcement')
      expect(messages.find((m) => m.type === 'POSITION' && m.writer === 'w3')).to.deep.include({ prev: 10n, next: 30n })
      expect((await stored()).w3).to.equal(30n)
    } finally {
      await spy.close()
      await writerBus.close()
    }
  })

  it('should restart a known writer from its row and let it advance to the sequence', async () => {
    await sql`SELECT setval('events_stream_seq', 40)`.execute(t.db)
    await setPosition('w1', 25n)
    await setPosition('w2', 5n)
    const g = await start('w1', ['w1', 'w2'])
    expect(g.position()).to.equal(40n)
    expect((await stored()).w1).to.equal(40n)
    expect((await stored()).w2).to.equal(5n)
  })

  it('should reconcile writers starting at the same time one after the other', async () => {
    const room = await createRoom(t.db)
    await insertEventRow(t.db, room, 12n, 'old')
    const writers = ['w1', 'w2', 'w3', 'w4']
    await Promise.all(writers.map((w) => start(w, writers)))
    expect(Object.keys(await stored()).sort()).to.deep.equal(writers)
    expect(await readMaxAllocated(t.db, 'events')).to.equal(12n)
    const ids = await Promise.all(generators.map((g) => g.transaction((_trx, allocate) => allocate(1))))
    expect(new Set(ids.map(([id]) => id)).size).to.equal(4)
    for (const [id] of ids) expect(id! > 12n).to.equal(true)
  })
})
