import { expect } from 'chai'
import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import pg from 'pg'
import type { Bus, BusState } from '../../../storage/bus/bus.js'
import type { BusMessage } from '../../../storage/bus/bus-message.js'
import { createMemoryBus, MemoryBusHub } from '../../../storage/bus/memory-bus.js'
import {
  createPostgresBus,
  postgresBusChannel,
  postgresBusListenApplicationName,
} from '../../../storage/bus/postgres-bus.js'
import { createRedisBus, redisBusChannel } from '../../../storage/bus/redis-bus.js'
import { isStorageError } from '../../../storage/errors.js'
import { silentLogger } from '../../../storage/logger.js'
import { startTcpProxy, type TcpProxy } from './bus-tcp-proxy.js'
import { startRedisSentinel, startRedisServer, type RedisServerProcess } from './bus-redis-server.js'

const log = silentLogger()

/** One transport under the contract: buses sharing the channel of a server name, and raw access to that channel. */
interface Transport {
  readonly name: 'redis' | 'postgres' | 'memory'
  create(serverName: string): Bus
  publishRaw(serverName: string, line: string): Promise<void>
  close(): Promise<void>
}

function requireEnv(name: string): string {
  const value = process.env[name]
  if (!value) throw new Error(`${name} is not set: run through scripts/test-services.sh`)
  return value
}

function redisTransport(): Transport {
  const url = requireEnv('MYELIN_TEST_REDIS_URL')
  const raw = new Redis(url)
  return {
    name: 'redis',
    create: (serverName) => createRedisBus({ url, serverName, log }),
    publishRaw: async (serverName, line) => void (await raw.publish(redisBusChannel(serverName), line)),
    close: async () => void (await raw.quit()),
  }
}

function postgresTransport(): Transport {
  const connectionString = requireEnv('MYELIN_TEST_DATABASE_URL')
  const raw = new pg.Pool({ connectionString, max: 1 })
  return {
    name: 'postgres',
    create: (serverName) => createPostgresBus({ connectionString, serverName, log }),
    publishRaw: async (serverName, line) =>
      void (await raw.query('SELECT pg_notify($1, $2)', [postgresBusChannel(serverName), line])),
    close: () => raw.end(),
  }
}

function memoryTransport(): Transport {
  const hubs = new Map<string, MemoryBusHub>()
  const hubOf = (serverName: string): MemoryBusHub => {
    let hub = hubs.get(serverName)
    if (!hub) hubs.set(serverName, (hub = new MemoryBusHub()))
    return hub
  }
  return {
    name: 'memory',
    create: (serverName) => createMemoryBus({ hub: hubOf(serverName), log }),
    publishRaw: async (serverName, line) => hubOf(serverName).publishRaw(line),
    close: async () => undefined,
  }
}

/** Polls `predicate` until it holds; fails after `timeoutMs`. */
async function eventually(predicate: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}

function collect(bus: Bus): BusMessage[] {
  const seen: BusMessage[] = []
  bus.subscribe((m) => seen.push(m))
  return seen
}

function replicate(from: string): BusMessage {
  return { type: 'REPLICATE', from }
}

function position(writer: string, prev: bigint, next: bigint, rooms?: readonly string[]): BusMessage {
  return { type: 'POSITION', stream: 'events', writer, prev, next, ...(rooms ? { rooms } : {}) }
}

async function rejection(promise: Promise<unknown>, withinMs = 8000): Promise<unknown> {
  let timer: NodeJS.Timeout | undefined
  const hang = new Promise((resolve) => {
    timer = setTimeout(() => resolve(new Error(`still pending after ${withinMs} ms`)), withinMs)
  })
  const outcome = await Promise.race([
    promise.then(
      () => new Error('resolved instead of rejecting'),
      (err: unknown) => ({ rejected: err }),
    ),
    hang,
  ])
  clearTimeout(timer)
  if (outcome instanceof Error) throw outcome
  return (outcome as { rejected: unknown }).rejected
}

/**
 * Two buses of one server ride out an outage of their transport (`outage.stop()` to
 * `outage.start()`): both go down, a publish is refused within `refuseWithinMs`, both come back
 * up, and a publish after it is delivered.
 */
async function expectOutageRecovery(create: (serverName: string) => Bus, outage: { stop(): Promise<void>; start(): Promise<void> }, refuseWithinMs: number): Promise<void> {
  const serverName = `hs-${randomUUID()}`
  const a = create(serverName)
  const b = create(serverName)
  const statesA: BusState[] = []
  const statesB: BusState[] = []
  a.onStateChange((s) => statesA.push(s))
  b.onStateChange((s) => statesB.push(s))
  await Promise.all([a.start(), b.start()])
  const seen = collect(b)

  await outage.stop()
  await eventually(() => a.state === 'down' && b.state === 'down', 'down')
  const err = await rejection(a.publish(replicate('during-outage')), refuseWithinMs)
  expect(isStorageError(err, 'ES_UNAVAILABLE')).to.equal(true)

  await outage.start()
  await eventually(() => a.state === 'up' && b.state === 'up', 'up again')
  expect(statesA).to.deep.equal(['up', 'down', 'up'])
  expect(statesB).to.deep.equal(['up', 'down', 'up'])
  await a.publish(replicate('after-outage'))
  await eventually(() => seen.length === 1, 'delivery after the outage')
  expect(seen).to.deep.equal([replicate('after-outage')])
}

const transports: (() => Transport)[] = [redisTransport, postgresTransport, memoryTransport]

for (const makeTransport of transports) {
  describe(`Bus contract: ${makeTransport.name.replace('Transport', '')}`, () => {
    let transport: Transport
    let serverName: string
    let buses: Bus[]

    before(() => {
      transport = makeTransport()
    })
    after(async () => {
      await transport.close()
    })
    beforeEach(() => {
      serverName = `hs-${randomUUID()}.test`
      buses = []
    })
    afterEach(async () => {
      await Promise.all(buses.map((bus) => bus.close()))
    })

    async function started(count: number, name = serverName): Promise<Bus[]> {
      const created = Array.from({ length: count }, () => transport.create(name))
      buses.push(...created)
      await Promise.all(created.map((bus) => bus.start()))
      return created
    }

    it('should report up on start', async () => {
      const bus = transport.create(serverName)
      buses.push(bus)
      expect(bus.transport).to.equal(transport.name)
      const states: BusState[] = []
      bus.onStateChange((s) => states.push(s))
      expect(bus.state).to.equal('down')
      await bus.start()
      expect(bus.state).to.equal('up')
      expect(states).to.deep.equal(['up'])
      expect(bus.start()).to.equal(bus.start(), 'a second start returns the first promise')
    })

    it('should deliver to every subscriber of every bus, the publisher included, exactly once', async () => {
      const [a, b, c] = (await started(3)) as [Bus, Bus, Bus]
      const seenA1 = collect(a)
      const seenA2 = collect(a)
      const seenB = collect(b)
      const seenC = collect(c)
      await a.publish(replicate('a'))
      await a.publish(position('a', 1n, 2n))
      const all = [seenA1, seenA2, seenB, seenC]
      await eventually(() => all.every((seen) => seen.length >= 2), 'delivery to all subscribers')
      // Later messages from `a` arrive after earlier ones, so a duplicate would show by now.
      await a.publish(replicate('marker'))
      await eventually(() => all.every((seen) => seen.length >= 3), 'marker')
      for (const seen of all) {
        expect(seen).to.deep.equal([replicate('a'), position('a', 1n, 2n), replicate('marker')])
      }
    })

    it('should preserve the order of each publisher, even for concurrent publishes', async () => {
      const [a, b, receiver] = (await started(3)) as [Bus, Bus, Bus]
      const seen = collect(receiver)
      const count = 100
      await Promise.all(
        Array.from({ length: count }, (_, i) => [
          a.publish(position('a', BigInt(i), BigInt(i + 1))),
          b.publish(position('b', BigInt(i), BigInt(i + 1))),
        ]).flat(),
      )
      await eventually(() => seen.length >= 2 * count, 'all messages')
      for (const writer of ['a', 'b']) {
        const nexts = seen.flatMap((m) => (m.type === 'POSITION' && m.writer === writer ? [m.next] : []))
        expect(nexts).to.deep.equal(Array.from({ length: count }, (_, i) => BigInt(i + 1)))
      }
    })

    it('should carry positions beyond 2^53 exactly', async () => {
      const [a, b] = (await started(2)) as [Bus, Bus]
      const seen = collect(b)
      const prev = 2n ** 53n + 1n
      const next = 2n ** 63n - 1n
      await a.publish(position('p1', prev, next))
      await eventually(() => seen.length === 1, 'delivery')
      expect(seen[0]).to.deep.equal(position('p1', prev, next))
    })

    it('should carry room hints: a list, an empty list and none', async () => {
      const [a, b] = (await started(2)) as [Bus, Bus]
      const seen = collect(b)
      await a.publish(position('p1', 1n, 2n, ['!a:hs', '!bé:hs.example']))
      await a.publish(position('p1', 2n, 3n, []))
      await a.publish(position('p1', 3n, 4n))
      await eventually(() => seen.length === 3, 'delivery')
      expect(seen).to.deep.equal([
        position('p1', 1n, 2n, ['!a:hs', '!bé:hs.example']),
        position('p1', 2n, 3n, []),
        position('p1', 3n, 4n),
      ])
      expect('rooms' in (seen[2] as object)).to.equal(false)
    })

    it('should drop a hint too large for the wire and still deliver the position', async () => {
      const [a, b] = (await started(2)) as [Bus, Bus]
      const seen = collect(b)
      const rooms = Array.from({ length: 400 }, (_, i) => `!room${String(i).padStart(8, '0')}:example.org`)
      await a.publish(position('p1', 1n, 2n, rooms))
      await a.publish(position('p1', 2n, 3n, ['!ok:hs', '!not ok:hs']))
      await eventually(() => seen.length === 2, 'delivery')
      expect(seen).to.deep.equal([position('p1', 1n, 2n), position('p1', 2n, 3n)])
    })

    it('should stop delivering to an unsubscribed handler only', async () => {
      const [a, b] = (await started(2)) as [Bus, Bus]
      const stays = collect(b)
      const leaves: BusMessage[] = []
      const unsubscribe = b.subscribe((m) => leaves.push(m))
      await a.publish(replicate('first'))
      await eventually(() => leaves.length === 1 && stays.length === 1, 'first delivery')
      unsubscribe()
      unsubscribe()
      await a.publish(replicate('second'))
      await eventually(() => stays.length === 2, 'second delivery')
      expect(leaves).to.deep.equal([replicate('first')])
    })

    it('should drop malformed raw messages without crashing and keep delivering', async () => {
      const [a, b] = (await started(2)) as [Bus, Bus]
      const seen = collect(b)
      const garbage = [
        '',
        'HELLO world',
        'POSITION events p1 5 3',
        'POSITION events p1 1 99999999999999999999',
        'POSITION events p1 1 2 !a:hs,,!b:hs',
        'REPLICATE',
        '{"type":"POSITION"}',
        'x'.repeat(7999),
      ]
      for (const line of garbage) await transport.publishRaw(serverName, line)
      await transport.publishRaw(serverName, 'REPLICATE raw')
      await a.publish(replicate('after'))
      await eventually(() => seen.length >= 2, 'valid messages')
      expect(seen).to.deep.equal([replicate('raw'), replicate('after')])
      expect(b.state).to.equal('up')
    })

    it('should keep delivering when a handler throws', async () => {
      const [a, b] = (await started(2)) as [Bus, Bus]
      b.subscribe(() => {
        throw new Error('handler failure')
      })
      const seen = collect(b)
      await a.publish(replicate('one'))
      await a.publish(replicate('two'))
      await eventually(() => seen.length === 2, 'both messages')
      expect(seen).to.deep.equal([replicate('one'), replicate('two')])
    })

    it('should not deliver across server names', async () => {
      const [a] = (await started(1)) as [Bus]
      const [other] = (await started(1, `other-${serverName}`)) as [Bus]
      const seenOther = collect(other)
      const seenA = collect(a)
      await a.publish(replicate('a'))
      await other.publish(replicate('other'))
      await eventually(() => seenA.length === 1 && seenOther.length === 1, 'own deliveries')
      expect(seenA).to.deep.equal([replicate('a')])
      expect(seenOther).to.deep.equal([replicate('other')])
    })

    it('should reject an unencodable message without disturbing the bus', async () => {
      const [a] = (await started(1)) as [Bus]
      const seen = collect(a)
      const err = await rejection(a.publish(position('bad writer', 1n, 2n)))
      expect(isStorageError(err, 'ES_INVALID_PARAM')).to.equal(true)
      await a.publish(replicate('fine'))
      await eventually(() => seen.length === 1, 'delivery')
    })

    it('should reject publishing before start and after close, and deliver nothing after close', async () => {
      const bus = transport.create(serverName)
      buses.push(bus)
      expect(isStorageError(await rejection(bus.publish(replicate('early'))), 'ES_UNAVAILABLE')).to.equal(true)
      const [peer] = (await started(1)) as [Bus]
      await bus.start()
      const seen = collect(bus)
      const states: BusState[] = []
      bus.onStateChange((s) => states.push(s))
      await bus.close()
      await bus.close()
      expect(bus.state).to.equal('down')
      expect(isStorageError(await rejection(bus.publish(replicate('late'))), 'ES_UNAVAILABLE')).to.equal(true)
      expect(isStorageError(await rejection(bus.start()), 'ES_UNAVAILABLE')).to.equal(true)
      const peerSeen = collect(peer)
      await peer.publish(replicate('peer'))
      await eventually(() => peerSeen.length === 1, 'peer delivery')
      expect(seen).to.deep.equal([])
      expect(states).to.deep.equal([])
    })
  })
}

describe('Bus outages', () => {
  describe('redis', () => {
    let server: RedisServerProcess
    const buses: Bus[] = []

    before(async () => {
      server = await startRedisServer()
    })
    after(async () => {
      await Promise.all(buses.map((bus) => bus.close()))
      await server.stop()
    })

    function create(
      serverName: string,
      { startTimeoutMs = 10_000, commandTimeoutMs = 1000, pingIntervalMs = 30_000 } = {},
    ): Bus {
      const bus = createRedisBus({
        url: server.url,
        serverName,
        log,
        maxReconnectDelayMs: 100,
        commandTimeoutMs,
        pingIntervalMs,
        startTimeoutMs,
      })
      buses.push(bus)
      return bus
    }

    it('should go down when Redis stops, reject publishes promptly, and come back up with delivery', async () => {
      await expectOutageRecovery(create, server, 2000)
    })

    it('should reject a publish that Redis does not answer in time', async () => {
      const bus = create(`hs-${randomUUID()}`, { commandTimeoutMs: 150 })
      await bus.start()
      const blocker = new Redis(server.url)
      try {
        const sleeping = blocker.call('DEBUG', 'SLEEP', '0.5')
        await new Promise((resolve) => setTimeout(resolve, 50))
        const err = await rejection(bus.publish(replicate('slow')), 400)
        expect(isStorageError(err, 'ES_UNAVAILABLE')).to.equal(true)
        expect(String((err as Error).cause)).to.match(/timed out/i)
        await sleeping
      } finally {
        await blocker.quit()
      }
    })

    it('should drop and re-establish connections that stop answering the health-check PING', async () => {
      const serverName = `hs-${randomUUID()}`
      const bus = create(serverName, { commandTimeoutMs: 150, pingIntervalMs: 50 })
      const states: BusState[] = []
      bus.onStateChange((s) => states.push(s))
      await bus.start()
      const blocker = new Redis(server.url)
      try {
        await blocker.call('DEBUG', 'SLEEP', '0.6')
      } finally {
        await blocker.quit()
      }
      await eventually(() => states.length >= 3, 'down and up again')
      expect(states).to.deep.equal(['up', 'down', 'up'])
      const seen = collect(bus)
      await bus.publish(replicate('after-health-check'))
      await eventually(() => seen.length === 1, 'delivery after the reconnect')
    })

    it('should find the master through Sentinel', async () => {
      const sentinel = await startRedisSentinel(server.port)
      try {
        const serverName = `hs-${randomUUID()}`
        const viaSentinel = createRedisBus({
          sentinels: [{ host: '127.0.0.1', port: sentinel.port }],
          sentinelName: 'mymaster',
          serverName,
          log,
        })
        buses.push(viaSentinel)
        const direct = create(serverName)
        await Promise.all([viaSentinel.start(), direct.start()])
        const seen = collect(direct)
        await viaSentinel.publish(replicate('via-sentinel'))
        await eventually(() => seen.length === 1, 'delivery through the master found by Sentinel')
        expect(seen).to.deep.equal([replicate('via-sentinel')])
        await viaSentinel.close()
      } finally {
        await sentinel.stop()
      }
    })

    it('should reject start when Redis is unreachable and come up once it is back', async () => {
      await server.stop()
      const bus = create(`hs-${randomUUID()}`, { startTimeoutMs: 200 })
      const states: BusState[] = []
      bus.onStateChange((s) => states.push(s))
      expect(isStorageError(await rejection(bus.start()), 'ES_UNAVAILABLE')).to.equal(true)
      expect(isStorageError(await rejection(bus.publish(replicate('x')), 2000), 'ES_UNAVAILABLE')).to.equal(true)
      await server.start()
      await eventually(() => bus.state === 'up', 'up')
      expect(states).to.deep.equal(['up'])
      const seen = collect(bus)
      await bus.publish(replicate('self'))
      await eventually(() => seen.length === 1, 'own delivery')
    })
  })

  describe('postgres', () => {
    const buses: Bus[] = []
    let admin: pg.Pool

    before(() => {
      admin = new pg.Pool({ connectionString: requireEnv('MYELIN_TEST_DATABASE_URL'), max: 1 })
    })
    after(async () => {
      await Promise.all(buses.map((bus) => bus.close()))
      await admin.end()
    })

    it('should go down when its LISTEN connection is terminated and come back up with delivery', async () => {
      const connectionString = requireEnv('MYELIN_TEST_DATABASE_URL')
      const serverName = `hs-${randomUUID()}`
      const a = createPostgresBus({ connectionString, serverName, log, maxReconnectDelayMs: 100 })
      const b = createPostgresBus({ connectionString, serverName, log, maxReconnectDelayMs: 100 })
      buses.push(a, b)
      const states: BusState[] = []
      b.onStateChange((s) => states.push(s))
      await Promise.all([a.start(), b.start()])
      const seen = collect(b)

      const { rows } = await admin.query<{ terminated: boolean }>(
        `SELECT pg_terminate_backend(pid) AS terminated FROM pg_stat_activity
          WHERE application_name = $1 AND query LIKE '%' || $2 || '%'`,
        [postgresBusListenApplicationName, postgresBusChannel(serverName)],
      )
      expect(rows.map((r) => r.terminated)).to.deep.equal([true, true])

      await eventually(() => states.length >= 3, 'down and up again')
      expect(states).to.deep.equal(['up', 'down', 'up'])
      await eventually(() => a.state === 'up', 'publisher side up again')
      await a.publish(replicate('after-reconnect'))
      await eventually(() => seen.length === 1, 'delivery after the reconnect')
      expect(seen).to.deep.equal([replicate('after-reconnect')])
    })

    describe('through a TCP proxy that can be cut', () => {
      let proxy: TcpProxy
      let proxiedUrl: string

      before(async () => {
        const target = new URL(requireEnv('MYELIN_TEST_DATABASE_URL'))
        proxy = await startTcpProxy(target.hostname, Number(target.port || 5432))
        target.port = String(proxy.port)
        proxiedUrl = target.toString()
      })
      after(async () => {
        await proxy.stop()
      })

      function create(serverName: string, startTimeoutMs = 10_000): Bus {
        const bus = createPostgresBus({
          connectionString: proxiedUrl,
          serverName,
          log,
          startTimeoutMs,
          publishTimeoutMs: 1000,
          maxReconnectDelayMs: 50,
        })
        buses.push(bus)
        return bus
      }

      it('should go down when Postgres is unreachable, reject publishes promptly, and come back up with delivery', async () => {
        await proxy.start()
        await expectOutageRecovery(create, proxy, 3000)
      })

      it('should reject start and publish while Postgres is unreachable, and come up once it is back', async () => {
        await proxy.stop()
        const bus = create(`hs-${randomUUID()}`, 200)
        const states: BusState[] = []
        bus.onStateChange((s) => states.push(s))
        expect(isStorageError(await rejection(bus.start()), 'ES_UNAVAILABLE')).to.equal(true)
        expect(bus.state).to.equal('down')
        expect(isStorageError(await rejection(bus.publish(replicate('x')), 3000), 'ES_UNAVAILABLE')).to.equal(true)
        await proxy.start()
        await eventually(() => bus.state === 'up', 'up')
        expect(states).to.deep.equal(['up'])
        const seen = collect(bus)
        await bus.publish(replicate('self'))
        await eventually(() => seen.length === 1, 'own delivery')
      })

      it('should stop reconnecting when closed during an outage', async () => {
        await proxy.start()
        const wasUp = create(`hs-${randomUUID()}`)
        await wasUp.start()
        await proxy.stop()
        await eventually(() => wasUp.state === 'down', 'down')
        const neverUp = create(`hs-${randomUUID()}`, 100)
        await rejection(neverUp.start())
        await Promise.all([wasUp.close(), neverUp.close()])
        await proxy.start()
        await eventually(() => buses.every((b) => b.state === 'up' || b === wasUp || b === neverUp), 'open buses up')
        // Time for a reconnect that close() failed to stop to complete.
        await new Promise((resolve) => setTimeout(resolve, 300))
        const { rows } = await admin.query<{ n: number }>(
          'SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1',
          [postgresBusListenApplicationName],
        )
        const open = buses.filter((b) => b.state === 'up').length
        expect(rows[0]?.n).to.equal(open, 'no LISTEN connection beyond those of open buses')
      })
    })
  })

  describe('memory', () => {
    it('should go down on a simulated outage, reject publishes, and come back up with delivery', async () => {
      const hub = new MemoryBusHub()
      const a = createMemoryBus({ hub })
      const b = createMemoryBus({ hub })
      const states: BusState[] = []
      b.onStateChange((s) => states.push(s))
      await Promise.all([a.start(), b.start()])
      const seen = collect(b)
      hub.disconnect()
      expect(isStorageError(await rejection(a.publish(replicate('lost'))), 'ES_UNAVAILABLE')).to.equal(true)
      hub.reconnect()
      await a.publish(replicate('after'))
      await eventually(() => seen.length === 1, 'delivery')
      expect(states).to.deep.equal(['up', 'down', 'up'])
      expect(seen).to.deep.equal([replicate('after')])
      await Promise.all([a.close(), b.close()])
    })
  })
})
