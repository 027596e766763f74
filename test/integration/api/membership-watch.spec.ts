import { expect } from 'chai'
import { Kysely, PostgresDialect } from 'kysely'
import pg from 'pg'
import type { Bus } from '../../../storage/bus/bus.js'
import { createMemoryBus, MemoryBusHub } from '../../../storage/bus/memory-bus.js'
import type { Database } from '../../../storage/schema.js'
import { createMembershipWatch, type MembershipWatch } from '../../../api/membership-watch.js'
import type { Persister } from '../../../persisters/persister.js'
import { silentLogger } from '../../../storage/logger.js'
import { createStreamTracker, type StreamTracker } from '../../../storage/streams/stream-tracker.js'
import { createTestDatabase, type TestDatabase } from '../../support/db.js'
import { createRoomEvents, member, message, newRoomId, send, startPersister, user } from '../persisters/harness.js'

const alice = user('alice')

describe('MembershipWatch (long-polls woken by their user\'s membership anywhere)', () => {
  let t: TestDatabase
  let persister: Persister
  let tracker: StreamTracker
  let watch: MembershipWatch
  let roomId: string

  before(async () => {
    t = await createTestDatabase()
    persister = await startPersister(t.db, { writer: 'p1' })
    tracker = createStreamTracker({ db: t.db, log: silentLogger(), pollIntervalMs: 20 })
    await tracker.start()
    watch = createMembershipWatch({ db: t.db, tracker, log: silentLogger() })
    roomId = newRoomId()
    await send(persister, roomId, ...createRoomEvents(alice))
  })
  after(async () => {
    await tracker.close()
    await persister.close()
    await t.drop()
  })

  async function covered(): Promise<void> {
    const deadline = Date.now() + 5000
    const target = (await t.db.selectFrom('events').select((eb) => eb.fn.max('stream_ordering').as('max')).executeTakeFirstOrThrow()).max
    while (tracker.linearPosition() < BigInt(target ?? 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
  }

  it('wakes only the waiter whose user was invited, among many', async () => {
    await covered()
    const after = tracker.currentToken()
    const users = Array.from({ length: 30 }, (_, i) => user(`waiter${i}`))
    const started = Date.now()
    const waits = users.map((u) => watch.wait(u, after, 1500, new AbortController().signal).then((outcome) => ({ outcome, ms: Date.now() - started })))
    await new Promise((r) => setTimeout(r, 200))
    await send(persister, roomId, member(alice, users[7]!, 'invite'))
    const outcomes = await Promise.all(waits)
    expect(outcomes[7]!.outcome).to.equal('advanced')
    expect(outcomes[7]!.ms, 'woken at the invite, not at the timeout').to.be.below(1200)
    expect(outcomes.filter((_, i) => i !== 7).map((o) => o.outcome)).to.deep.equal(Array(29).fill('timeout'))
  })

  it('wakes at once for a change already stored after its token, and answers aborted on abort', async () => {
    await covered()
    const before = tracker.currentToken()
    const bob = user('bob')
    await send(persister, roomId, member(alice, bob, 'invite'))
    await covered()
    const started = Date.now()
    expect(await watch.wait(bob, before, 3000, new AbortController().signal)).to.equal('advanced')
    expect(Date.now() - started).to.be.below(1000)

    const abort = new AbortController()
    const waiting = watch.wait(user('carol'), tracker.currentToken(), 3000, abort.signal)
    setTimeout(() => abort.abort(), 50)
    expect(await waiting).to.equal('aborted')
  })

  describe('with position hints on the bus', () => {
    let hub: MemoryBusHub
    let buses: Bus[]
    let hinted: Persister
    let hintedTracker: StreamTracker
    let broken: Kysely<Database>
    let hintedRoom: string

    before(async () => {
      hub = new MemoryBusHub()
      buses = [createMemoryBus({ hub }), createMemoryBus({ hub })]
      for (const bus of buses) await bus.start()
      hinted = await startPersister(t.db, { writer: 'p2', bus: buses[0] })
      hintedRoom = newRoomId()
      await send(hinted, hintedRoom, ...createRoomEvents(alice))
      hintedTracker = createStreamTracker({ db: t.db, bus: buses[1], log: silentLogger(), pollIntervalMs: 60_000 })
      await hintedTracker.start()
      // A database handle whose every query fails: only the hints can wake a waiter.
      broken = new Kysely<Database>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: 'postgres://nobody@127.0.0.1:1/none', connectionTimeoutMillis: 200 }) }) })
    })
    after(async () => {
      await hintedTracker.close()
      await hinted.close()
      await broken.destroy()
      for (const bus of buses) await bus.close()
    })

    it('wakes the invited user from the hint alone, without reading the database', async () => {
      const hintedWatch = createMembershipWatch({ db: broken, tracker: hintedTracker, log: silentLogger() })
      await send(hinted, hintedRoom, message(alice, 'settle'))
      for (let i = 0; i < 200 && hintedTracker.linearPosition() < (await maxStreamOrdering()); i++) await new Promise((r) => setTimeout(r, 10))
      const after = hintedTracker.currentToken()
      const dave = user('dave')
      const erin = user('erin')
      const started = Date.now()
      const waits = [dave, erin].map((u) => hintedWatch.wait(u, after, 1500, new AbortController().signal).then((outcome) => ({ outcome, ms: Date.now() - started })))
      await new Promise((r) => setTimeout(r, 100))
      await send(hinted, hintedRoom, member(alice, dave, 'invite'))
      const [daveWait, erinWait] = await Promise.all(waits)
      expect(daveWait?.outcome).to.equal('advanced')
      expect(daveWait?.ms, 'woken at the invite, not at the timeout').to.be.below(1400)
      expect(erinWait?.outcome).to.equal('timeout')
    })
  })

  async function maxStreamOrdering(): Promise<bigint> {
    const row = await t.db.selectFrom('events').select((eb) => eb.fn.max('stream_ordering').as('max')).executeTakeFirstOrThrow()
    return BigInt(row.max ?? 0)
  }
})
