import { expect } from 'chai'
import { randomBytes } from 'node:crypto'
import type { Bus } from '../../../../storage/bus/bus.js'
import { createRedisBus } from '../../../../storage/bus/redis-bus.js'
import { silentLogger } from '../../../../storage/logger.js'
import { createIdGenerator, type MultiWriterIdGenerator } from '../../../../storage/streams/id-generator.js'
import { createStreamTracker, type StreamTracker } from '../../../../storage/streams/stream-tracker.js'
import { createTestDatabase, type TestDatabase } from '../../../support/db.js'
import { startRedisServer, type RedisServerProcess } from '../bus-redis-server.js'
import { capturingLogger, createRoom, eventually, insertEventRow } from './stream-fixtures.js'

const log = silentLogger()

describe('stream tracker during a Redis outage', function () {
  this.timeout(30_000)
  let t: TestDatabase
  let redis: RedisServerProcess
  let buses: Bus[]
  let writers: MultiWriterIdGenerator[]
  let tracker: StreamTracker

  beforeEach(async () => {
    t = await createTestDatabase()
    redis = await startRedisServer()
    buses = []
    writers = []
  })

  afterEach(async () => {
    await tracker?.close()
    for (const w of writers) await w.close()
    for (const b of buses) await b.close()
    await redis.stop()
    await t.drop()
  })

  it('should keep advancing by polling while Redis is down and return to push when it is back', async () => {
    const serverName = `outage-${randomBytes(4).toString('hex')}.test`
    const room = await createRoom(t.db)
    const bus = async (): Promise<Bus> => {
      const b = createRedisBus({ url: redis.url, serverName, log, maxReconnectDelayMs: 200 })
      await b.start()
      buses.push(b)
      return b
    }
    for (const name of ['w1', 'w2']) {
      writers.push(await createIdGenerator({ db: t.db, stream: 'events', writer: name, writers: ['w1', 'w2'], bus: await bus(), log, announceIntervalMs: 100 }))
    }
    const { log: readerLog, lines } = capturingLogger()
    tracker = createStreamTracker({ db: t.db, bus: await bus(), log: readerLog, pollIntervalMs: 50 })
    await tracker.start()
    expect(tracker.mode).to.equal('push')
    const write = (w: MultiWriterIdGenerator) =>
      w.transaction(async (trx, allocate) => {
        const ids = await allocate(2, [room])
        for (const id of ids) await insertEventRow(trx, room, id, w.writer)
        return ids
      })

    await redis.stop()
    await eventually(() => tracker.mode === 'polling', 'the tracker to notice the outage')
    expect(lines.some((l) => l.msg === 'bus down: polling stream_positions' && l.level === 40)).to.equal(true)
    for (let i = 0; i < 5; i++) {
      const ids = await write(writers[i % 2]!)
      await eventually(() => tracker.positions().get(writers[i % 2]!.writer) === ids[1], 'the tracker to advance by polling')
    }
    expect(tracker.mode).to.equal('polling')

    await redis.start()
    await eventually(() => tracker.mode === 'push', 'the tracker to return to push', 10_000)
    expect(lines.some((l) => l.msg === 'bus up: stream positions pushed again')).to.equal(true)
    // Pushed again: a write shows up well before the next full refresh (every 5 s) would.
    await eventually(() => buses.every((b) => b.state === 'up'), 'every bus to reconnect', 10_000)
    const ids = await write(writers[0]!)
    await eventually(() => tracker.positions().get('w1') === ids[1], 'a pushed position', 1000)
  })
})
