import { expect } from 'chai'
import { sql } from 'kysely'
import type { Bus } from '../../../../storage/bus/bus.js'
import type { BusMessage } from '../../../../storage/bus/bus-message.js'
import { createMemoryBus, MemoryBusHub } from '../../../../storage/bus/memory-bus.js'
import { isStorageError } from '../../../../storage/errors.js'
import { silentLogger } from '../../../../storage/logger.js'
import { createIdGenerator, type MultiWriterIdGenerator } from '../../../../storage/streams/id-generator.js'
import { loadInstanceIds } from '../../../../storage/streams/instances.js'
import { createTestDatabase, type TestDatabase } from '../../../support/db.js'
import { createRoom, deferred, eventually, insertEventRow } from './stream-fixtures.js'

const log = silentLogger()

describe('MultiWriterIdGenerator', () => {
  let t: TestDatabase
  let hub: MemoryBusHub
  let buses: Bus[]
  let generators: MultiWriterIdGenerator[]
  let messages: BusMessage[]
  let roomId: string

  async function bus(): Promise<Bus> {
    const b = createMemoryBus({ hub, log })
    await b.start()
    buses.push(b)
    return b
  }

  async function generator(writer: string, options: { stream?: 'events' | 'backfill'; writers?: string[]; announceIntervalMs?: number } = {}) {
    const g = await createIdGenerator({
      db: t.db,
      stream: options.stream ?? 'events',
      writer,
      writers: options.writers ?? ['w1', 'w2', 'w3'],
      bus: await bus(),
      log,
      announceIntervalMs: options.announceIntervalMs ?? 60_000,
    })
    generators.push(g)
    return g
  }

  async function storedPosition(writer: string, stream = 'events'): Promise<bigint | undefined> {
    const row = await t.db
      .selectFrom('stream_positions')
      .select('stream_id')
      .where('stream_name', '=', stream)
      .where('instance_name', '=', writer)
      .executeTakeFirst()
    return row === undefined ? undefined : BigInt(row.stream_id)
  }

  function positionsOf(writer: string): Extract<BusMessage, { type: 'POSITION' }>[] {
    return messages.filter((m): m is Extract<BusMessage, { type: 'POSITION' }> => m.type === 'POSITION' && m.writer === writer)
  }

  beforeEach(async () => {
    t = await createTestDatabase()
    hub = new MemoryBusHub()
    buses = []
    generators = []
    messages = []
    const spy = await bus()
    spy.subscribe((m) => messages.push(m))
    roomId = await createRoom(t.db)
  })

  afterEach(async () => {
    for (const g of generators) await g.close()
    for (const b of buses) await b.close()
    await t.drop()
  })

  it('should allocate ascending IDs from the sequence inside the transaction and advance after commit', async () => {
    const g = await generator('w1')
    const start = g.position()
    const ids = await g.transaction(async (trx, allocate) => {
      const got = await allocate(3, [roomId])
      for (const id of got) await insertEventRow(trx, roomId, id, 'w1')
      expect(g.position()).to.equal(start)
      return got
    })
    expect(ids).to.have.length(3)
    expect(ids[0]! < ids[1]! && ids[1]! < ids[2]!).to.equal(true)
    expect(ids[0]! > start).to.equal(true)
    expect(g.position()).to.equal(ids[2])
    // With the bus up, stream_positions is written in the background (at most every 50 ms).
    await eventually(async () => (await storedPosition('w1')) === ids[2], 'the stored position')
    await eventually(() => positionsOf('w1').some((m) => m.next === ids[2]), 'the POSITION message')
    const message = positionsOf('w1').find((m) => m.next === ids[2])!
    expect(message.rooms).to.deep.equal([roomId])
    expect(message.prev).to.equal(start)
  })

  it('should run a one-statement write that allocates its own IDs: position held while it runs, advanced and announced after', async () => {
    const g = await generator('w1')
    const start = g.position()
    const ids = await g.statement([roomId], async (db, sequence) => {
      const { rows } = await sql<{ id: string }>`
        WITH ids AS (SELECT nextval(${sequence}::regclass) AS id FROM generate_series(1, 2)),
             ins AS (INSERT INTO events (stream_ordering, event_id, room_id, type, sender, origin_server_ts, received_ts, depth, instance_name)
                     SELECT id, '$s' || id, ${roomId}, 'm.room.message', '@t:test', 1, 1, 1, 'w1' FROM ids)
        SELECT id FROM ids`.execute(db)
      expect(g.position(), 'not past IDs the statement may hold').to.equal(start)
      return { ids: rows.map((r) => BigInt(r.id)), result: rows.map((r) => BigInt(r.id)) }
    })
    expect(ids).to.have.length(2)
    expect(g.position()).to.equal(ids.reduce((a, b) => (a > b ? a : b)))
    await eventually(() => positionsOf('w1').some((m) => m.next === g.position() && m.rooms?.includes(roomId) === true), 'the POSITION message with the room hint')

    // A failed statement rolls back what it allocated: gaps, which later writes move past.
    const failed = await g
      .statement([roomId], async (db, sequence) => {
        await sql`SELECT nextval(${sequence}::regclass), 1 / 0`.execute(db)
        return { ids: [], result: undefined }
      })
      .catch((err: unknown) => err)
    expect((failed as { code?: string }).code).to.equal('22012')
    const [next] = await g.transaction(async (trx, allocate) => {
      const got = await allocate(1, [roomId])
      await insertEventRow(trx, roomId, got[0]!, 'w1')
      return got
    })
    expect(g.position()).to.equal(next)
  })

  it('should announce any room over rows whose commit it could not confirm, then hints again', async () => {
    const g = await generator('w1')
    // The statement commits a row, then its answer is lost (no SQLSTATE: the outcome is unknown).
    const lost = await g
      .statement([roomId], async (db, sequence) => {
        await sql`INSERT INTO events (stream_ordering, event_id, room_id, type, sender, origin_server_ts, received_ts, depth, instance_name)
                  SELECT id, '$lost' || id, ${roomId}, 'm.room.message', '@t:test', 1, 1, 1, 'w1' FROM (SELECT nextval(${sequence}::regclass) AS id) ids`.execute(db)
        throw new Error('Connection terminated unexpectedly')
      })
      .catch((err: unknown) => err)
    expect((lost as Error).message).to.equal('Connection terminated unexpectedly')
    const [{ id: lostId }] = (await sql<{ id: string }>`SELECT max(stream_ordering) AS id FROM events`.execute(t.db)).rows as [{ id: string }]
    const [next] = await g.transaction(async (trx, allocate) => {
      const got = await allocate(1, ['!later:test'])
      await insertEventRow(trx, roomId, got[0]!, 'w1')
      return got
    })
    await eventually(() => positionsOf('w1').some((m) => m.next >= BigInt(lostId)), 'a POSITION over the lost row')
    const over = positionsOf('w1').find((m) => m.next >= BigInt(lostId))!
    expect(over.rooms, 'the lost row may be in any room').to.equal(undefined)
    const [after] = await g.transaction(async (trx, allocate) => {
      const got = await allocate(1, ['!after:test'])
      await insertEventRow(trx, roomId, got[0]!, 'w1')
      return got
    })
    await eventually(() => positionsOf('w1').some((m) => m.next === after), 'the POSITION of the next write')
    expect(next! < after!).to.equal(true)
    expect(positionsOf('w1').find((m) => m.next === after)!.rooms).to.deep.equal(['!after:test'])
  })

  it('should refuse a one-statement write on the backfill stream', async () => {
    const g = await generator('w1', { stream: 'backfill' })
    const err = await g.statement(undefined, async () => ({ ids: [], result: 1 })).catch((e: unknown) => e)
    expect(isStorageError(err, 'ES_INVALID_PARAM')).to.equal(true)
  })

  it('should hand out negative IDs for the backfill stream and keep positive positions', async () => {
    const g = await generator('w1', { stream: 'backfill' })
    const ids = await g.transaction(async (trx, allocate) => {
      const got = await allocate(2)
      for (const id of got) await insertEventRow(trx, roomId, id, 'w1')
      return got
    })
    expect(ids).to.deep.equal([-2n, -3n])
    expect(g.position()).to.equal(3n)
    await eventually(async () => (await storedPosition('w1', 'backfill')) === 3n, 'the stored backfill position')
    await eventually(() => positionsOf('w1').some((m) => m.stream === 'backfill' && m.next === 3n && m.rooms === undefined), 'backfill POSITION without hint')
  })

  it('should finish rolled-back IDs as gaps, rethrow the error and announce no room for them', async () => {
    const g = await generator('w1')
    let allocated: bigint[] = []
    const failure = await g
      .transaction(async (_trx, allocate) => {
        allocated = await allocate(2, [roomId])
        throw new Error('boom')
      })
      .catch((err: unknown) => err)
    expect((failure as Error).message).to.equal('boom')
    expect(g.position()).to.equal(allocated[1])
    await eventually(() => positionsOf('w1').some((m) => m.next === allocated[1]), 'the POSITION message')
    expect(positionsOf('w1').find((m) => m.next === allocated[1])!.rooms).to.deep.equal([])
  })

  it('should never advertise past its own unfinished ID while later transactions commit', async () => {
    const g = await generator('w1')
    const hold = deferred()
    const allocatedFirst = deferred<bigint>()
    const first = g.transaction(async (trx, allocate) => {
      const [id] = await allocate(1, ['!first:test'])
      allocatedFirst.resolve(id!)
      await insertEventRow(trx, roomId, id!, 'w1')
      await hold.promise
    })
    const firstId = await allocatedFirst.promise
    const secondIds = await g.transaction(async (trx, allocate) => {
      const got = await allocate(2, ['!second:test'])
      for (const id of got) await insertEventRow(trx, roomId, id, 'w1')
      return got
    })
    expect(g.position()).to.equal(firstId - 1n)
    expect((await storedPosition('w1'))! < firstId).to.equal(true)
    hold.resolve()
    await first
    expect(g.position()).to.equal(secondIds[1])
    await eventually(() => positionsOf('w1').some((m) => m.next === secondIds[1]), 'the final POSITION')
    const last = positionsOf('w1').find((m) => m.next === secondIds[1])!
    expect([...(last.rooms ?? [])].sort()).to.deep.equal(['!first:test', '!second:test'])
    for (const m of positionsOf('w1')) expect(m.next < firstId || m.next >= secondIds[1]!).to.equal(true)
  })

  it('should run concurrent transactions and publish positions in order with chained prev', async () => {
    const g = await generator('w1')
    await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        g.transaction(async (trx, allocate) => {
          await new Promise((resolve) => setTimeout(resolve, (i * 7) % 13))
          const ids = await allocate(1 + (i % 3), [roomId])
          for (const id of ids) await insertEventRow(trx, roomId, id, 'w1')
        }),
      ),
    )
    const max = await t.db.selectFrom('events').select((eb) => eb.fn.max('stream_ordering').as('max')).executeTakeFirstOrThrow()
    expect(g.position()).to.equal(BigInt(max.max))
    await eventually(() => positionsOf('w1').some((m) => m.next === g.position()), 'the last POSITION')
    const chain = positionsOf('w1').filter((m) => m.prev !== m.next)
    for (let i = 1; i < chain.length; i++) expect(chain[i]!.prev).to.equal(chain[i - 1]!.next)
  })

  it('should advance an idle writer to what peers allocated, store it and answer REPLICATE', async () => {
    const idle = await generator('w2')
    const busy = await generator('w1')
    const ids = await busy.transaction(async (trx, allocate) => {
      const got = await allocate(5)
      for (const id of got) await insertEventRow(trx, roomId, id, 'w1')
      return got
    })
    await eventually(() => idle.position() === ids[4], 'the idle writer to follow')
    await eventually(async () => (await storedPosition('w2')) === ids[4], 'the idle position to be stored')
    const before = positionsOf('w2').length
    const asker = await bus()
    await asker.publish({ type: 'REPLICATE', from: 'reader' })
    await eventually(() => positionsOf('w2').length > before, 'an announcement')
    expect(positionsOf('w2').at(-1)).to.deep.include({ prev: ids[4], next: ids[4] })
  })

  it('should re-announce periodically', async () => {
    await generator('w1', { announceIntervalMs: 30 })
    const before = positionsOf('w1').length
    await eventually(() => positionsOf('w1').length >= before + 3, 'three re-announcements')
  })

  it('should register its instance ID', async () => {
    await generator('w3')
    expect((await loadInstanceIds(t.db)).has('w3')).to.equal(true)
  })

  it('should reject bad counts, late allocations, unknown writers and use after close', async () => {
    const g = await generator('w1')
    for (const n of [-1, 1.5, 100_001]) {
      const err = await g.transaction((_trx, allocate) => allocate(n)).catch((e: unknown) => e)
      expect(isStorageError(err, 'ES_INVALID_PARAM'), String(n)).to.equal(true)
    }
    expect(await g.transaction((_trx, allocate) => allocate(0))).to.deep.equal([])
    let late: ((n: number) => Promise<bigint[]>) | undefined
    await g.transaction(async (_trx, allocate) => {
      late = allocate
    })
    expect(isStorageError(await late!(1).catch((e: unknown) => e), 'ES_INVALID_PARAM')).to.equal(true)
    const unknown = await createIdGenerator({ db: t.db, stream: 'events', writer: 'nope', writers: ['w1'], log }).catch((e: unknown) => e)
    expect(isStorageError(unknown, 'ES_CONFIG_INVALID')).to.equal(true)
    await g.close()
    await g.close()
    expect(isStorageError(await g.transaction(async () => 1).catch((e: unknown) => e), 'ES_UNAVAILABLE')).to.equal(true)
  })

  it('should keep working without a bus', async () => {
    const g = await createIdGenerator({ db: t.db, stream: 'events', writer: 'w1', writers: ['w1'], log })
    generators.push(g)
    const [id] = await g.transaction((_trx, allocate) => allocate(1))
    expect(await storedPosition('w1')).to.equal(id)
  })

  it('should store its position with an asynchronous commit of its own, leaving the connection as it was', async () => {
    // One connection, set to wait for flushes (the test server's default is not to): a setting
    // that leaked out of the store's transaction would show on the next statement.
    const one = await createTestDatabase({ poolSize: 1 })
    try {
      await sql`SET synchronous_commit = on`.execute(one.db)
      // What the store's transaction commits with, seen from inside it.
      await sql`CREATE TABLE commit_modes (stream_id bigint, mode text)`.execute(one.db)
      await sql`CREATE FUNCTION record_commit_mode() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO commit_modes VALUES (NEW.stream_id, current_setting('synchronous_commit')); RETURN NEW; END $$`.execute(one.db)
      await sql`CREATE TRIGGER record_commit_mode BEFORE INSERT OR UPDATE ON stream_positions
        FOR EACH ROW EXECUTE FUNCTION record_commit_mode()`.execute(one.db)
      const g = await createIdGenerator({ db: one.db, stream: 'events', writer: 'w1', writers: ['w1'], log })
      generators.push(g)
      const [id] = await g.transaction((_trx, allocate) => allocate(1))
      // reconcileStream's row at start-up is part of a transaction of its own (an ordinary commit).
      const modes = await sql<{ mode: string }>`SELECT mode FROM commit_modes WHERE stream_id = ${id}`.execute(one.db)
      // (An upsert that meets its row fires the insert trigger and then the update trigger.)
      expect(modes.rows).to.not.be.empty
      expect(new Set(modes.rows.map((r) => r.mode))).to.deep.equal(new Set(['off']))
      const after = await sql<{ synchronous_commit: string }>`SHOW synchronous_commit`.execute(one.db)
      expect(after.rows[0]?.synchronous_commit).to.equal('on')
    } finally {
      for (const g of generators.splice(0)) await g.close()
      await one.drop()
    }
  })
})
