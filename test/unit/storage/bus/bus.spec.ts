import { expect } from 'chai'
import { createBus } from '../../../../storage/bus/bus.js'
import { createMemoryBus, MemoryBusHub } from '../../../../storage/bus/memory-bus.js'
import { postgresBusChannel } from '../../../../storage/bus/postgres-bus.js'
import { redisBusChannel } from '../../../../storage/bus/redis-bus.js'
import type { BusMessage } from '../../../../storage/bus/bus-message.js'
import type { BusState } from '../../../../storage/bus/bus.js'
import { isStorageError } from '../../../../storage/errors.js'
import { silentLogger } from '../../../../storage/logger.js'

const log = silentLogger()

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => expect.fail('expected a rejection'),
    (err: unknown) => err,
  )
}

describe('createBus', () => {
  // Nothing listens on port 9 (discard): creating a bus must not connect anywhere.
  it('should pick Redis when a URL or sentinels are configured', async () => {
    for (const redis of [{ url: 'redis://127.0.0.1:9' }, { sentinels: [{ host: '127.0.0.1', port: 9 }] }]) {
      const bus = createBus({ redis, databaseUrl: 'postgres://127.0.0.1:9/x', serverName: 'hs', monolith: true, log })
      expect(bus.transport).to.equal('redis')
      expect(bus.state).to.equal('down')
      await bus.close()
    }
  })

  it('should pick Postgres without Redis, even in a monolith', async () => {
    const bus = createBus({ redis: {}, databaseUrl: 'postgres://127.0.0.1:9/x', serverName: 'hs', monolith: true, log })
    expect(bus.transport).to.equal('postgres')
    await bus.close()
  })

  it('should pick the in-process bus in a monolith without Redis or database URL', async () => {
    const bus = createBus({ serverName: 'hs', monolith: true, log })
    expect(bus.transport).to.equal('memory')
    await bus.close()
  })

  it('should refuse a configuration without any transport', () => {
    let thrown: unknown
    try {
      createBus({ serverName: 'hs', log })
    } catch (err) {
      thrown = err
    }
    expect(isStorageError(thrown, 'ES_CONFIG_INVALID')).to.equal(true)
  })
})

describe('channel names', () => {
  it('should separate homeservers by server name', () => {
    expect(redisBusChannel('example.org')).to.equal('myelin:example.org')
    expect(postgresBusChannel('a')).not.to.equal(postgresBusChannel('b'))
  })

  it('should derive valid, short Postgres identifiers from any server name', () => {
    for (const name of ['example.org', 'Ex ample:8448', 'x'.repeat(500), 'ünïcødé.example']) {
      const channel = postgresBusChannel(name)
      expect(channel).to.match(/^myelin_[0-9a-f]{32}$/)
      expect(Buffer.byteLength(channel)).to.be.at.most(63)
      expect(postgresBusChannel(name)).to.equal(channel)
    }
  })
})

describe('createMemoryBus', () => {
  it('should only hear itself without a shared hub', async () => {
    const a = createMemoryBus()
    const b = createMemoryBus()
    await Promise.all([a.start(), b.start()])
    const seenA: BusMessage[] = []
    const seenB: BusMessage[] = []
    a.subscribe((m) => seenA.push(m))
    b.subscribe((m) => seenB.push(m))
    const published = a.publish({ type: 'REPLICATE', from: 'a' })
    expect(seenA).to.deep.equal([], 'delivery is asynchronous')
    await published
    await Promise.resolve()
    expect(seenA).to.deep.equal([{ type: 'REPLICATE', from: 'a' }])
    expect(seenB).to.deep.equal([])
    await Promise.all([a.close(), b.close()])
  })

  it('should simulate an outage: down, publishes rejected and lost, then up', async () => {
    const hub = new MemoryBusHub()
    const bus = createMemoryBus({ hub })
    const states: BusState[] = []
    bus.onStateChange((s) => states.push(s))
    await bus.start()
    const seen: BusMessage[] = []
    bus.subscribe((m) => seen.push(m))

    hub.disconnect()
    expect(bus.state).to.equal('down')
    expect(isStorageError(await rejection(bus.publish({ type: 'REPLICATE', from: 'x' })), 'ES_UNAVAILABLE')).to.equal(true)
    hub.publishRaw('REPLICATE lost')
    hub.reconnect()
    await bus.publish({ type: 'REPLICATE', from: 'y' })
    await Promise.resolve()
    expect(states).to.deep.equal(['up', 'down', 'up'])
    expect(seen).to.deep.equal([{ type: 'REPLICATE', from: 'y' }])
    await bus.close()
  })

  it('should wait in start() for a disconnected hub, and time out', async () => {
    const hub = new MemoryBusHub()
    hub.disconnect()
    const slow = createMemoryBus({ hub, startTimeoutMs: 5 })
    expect(isStorageError(await rejection(slow.start()), 'ES_UNAVAILABLE')).to.equal(true)
    const patient = createMemoryBus({ hub })
    const started = patient.start()
    hub.reconnect()
    await started
    expect(patient.state).to.equal('up')
    expect(slow.state).to.equal('up', 'a bus whose start timed out still comes up later')
    await Promise.all([slow.close(), patient.close()])
  })
})
