import { expect } from 'chai'
import fc from 'fast-check'
import type { Bus } from '../../../../storage/bus/bus.js'
import { createMemoryBus, MemoryBusHub } from '../../../../storage/bus/memory-bus.js'
import { createDatabase, type DatabaseHandle } from '../../../../storage/database.js'
import { silentLogger } from '../../../../storage/logger.js'
import { createIdGenerator, type MultiWriterIdGenerator } from '../../../../storage/streams/id-generator.js'
import { createNotifier, type Notifier } from '../../../../storage/streams/notifier.js'
import type { RoomStreamToken } from '../../../../storage/streams/room-stream-token.js'
import { readMaxAllocated } from '../../../../storage/streams/stream-sequence.js'
import { createStreamTracker, type StreamTracker } from '../../../../storage/streams/stream-tracker.js'
import { createTestDatabase, type TestDatabase } from '../../../support/db.js'
import { createRoom, deferred, eventually, insertEventRow } from './stream-fixtures.js'

/**
 * Random interleavings of allocate / commit / rollback / crash (with restart) across three
 * writers of one stream, each with its own pool and bus, and one reader (a tracker) that
 * reads rows up to the positions it was told. Checked after every step and on every message:
 * positions never go backwards; no writer (generator, bus message, stream_positions row,
 * tracker) is at or past one of its own unfinished IDs; the linear position never reaches an
 * unfinished ID; and at the end, every committed row was returned by the reader's reads (none
 * committed below a bound it had already read past). At every read, a notifier over the reader's
 * tracker names, for each earlier read's token, a superset of the rooms with rows after it (or
 * says it cannot tell).
 */

const log = silentLogger()
const writerNames = ['a', 'b', 'c'] as const
type WriterIndex = 0 | 1 | 2

type Action =
  | { kind: 'begin'; writer: WriterIndex; n: number; room: 0 | 1 }
  | { kind: 'commit' | 'rollback'; pick: number }
  | { kind: 'crash'; writer: WriterIndex }
  | { kind: 'read' }
  | { kind: 'restartReader' }
  | { kind: 'sleep'; ms: number }

const writerArb = fc.constantFrom<WriterIndex>(0, 1, 2)
const actionArb: fc.Arbitrary<Action> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('begin' as const), writer: writerArb, n: fc.integer({ min: 1, max: 3 }), room: fc.constantFrom<0 | 1>(0, 1) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('commit' as const), pick: fc.nat(5) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('rollback' as const), pick: fc.nat(5) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('crash' as const), writer: writerArb }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('read' as const) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('restartReader' as const) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('sleep' as const), ms: fc.integer({ min: 0, max: 30 }) }) },
)

interface OpenTransaction {
  readonly writer: string
  readonly ids: bigint[]
  readonly decide: (decision: 'commit' | 'rollback' | 'crash') => void
  readonly done: Promise<unknown>
}

interface Incarnation {
  readonly handle: DatabaseHandle
  readonly bus: Bus
  readonly generator: MultiWriterIdGenerator
}

class World {
  readonly hub = new MemoryBusHub()
  readonly running = new Map<string, Incarnation>()
  readonly open: OpenTransaction[] = []
  /** IDs allocated in transactions whose callback has not returned, per writer. */
  readonly unfinished = new Map<string, Set<bigint>>(writerNames.map((w) => [w, new Set()]))
  /** Highest position each writer was seen at anywhere (monotonicity). */
  readonly lastSeen = new Map<string, bigint>()
  readonly lastStored = new Map<string, bigint>()
  readonly readUpTo = new Map<string, bigint>()
  readonly seen = new Set<bigint>()
  readonly seenLinear = new Set<bigint>()
  lastLinear = 0n
  lastTrackerLinear = 0n
  /** Answers `roomsChangedAfter` gave (not undefined), over all runs: the check is not vacuous. */
  static roomsChangedAnswers = 0
  /** The reader's token at each earlier read. */
  readonly readTokens: RoomStreamToken[] = []
  notifier!: Notifier
  readonly lastTracker = new Map<string, bigint>()
  failures: string[] = []
  tracker!: StreamTracker
  trackerBus!: Bus
  spy!: Bus

  constructor(
    readonly t: TestDatabase,
    readonly rooms: readonly string[],
  ) {}

  minUnfinished(writer?: string): bigint | undefined {
    let min: bigint | undefined
    for (const [w, ids] of this.unfinished) {
      if (writer !== undefined && w !== writer) continue
      for (const id of ids) if (min === undefined || id < min) min = id
    }
    return min
  }

  fail(message: string): void {
    this.failures.push(message)
  }

  /** A writer at `position` must be below its own unfinished IDs; positions never go backwards. */
  checkWriter(where: string, writer: string, position: bigint, last: Map<string, bigint>): void {
    const min = this.minUnfinished(writer)
    if (min !== undefined && position >= min) this.fail(`${where}: ${writer} at ${position} with unfinished ${min}`)
    const before = last.get(writer)
    if (before !== undefined && position < before) this.fail(`${where}: ${writer} went back from ${before} to ${position}`)
    last.set(writer, position)
  }

  async start(): Promise<void> {
    this.spy = createMemoryBus({ hub: this.hub, log })
    await this.spy.start()
    this.spy.subscribe((m) => {
      if (m.type === 'POSITION') this.checkWriter('message', m.writer, m.next, this.lastSeen)
    })
    for (const name of writerNames) await this.startWriter(name)
    this.trackerBus = createMemoryBus({ hub: this.hub, log })
    await this.trackerBus.start()
    await this.startTracker()
  }

  /** A (new) tracker for the reader; the reader keeps the bounds it already read up to. */
  async startTracker(): Promise<void> {
    await this.tracker?.close()
    this.lastTracker.clear()
    this.lastTrackerLinear = 0n
    this.tracker = createStreamTracker({ db: this.t.db, bus: this.trackerBus, log, pollIntervalMs: 20 })
    this.tracker.onAdvance((writer, prev, next) => {
      if (next <= prev) this.fail(`tracker advanced ${writer} from ${prev} to ${next}`)
      this.checkTracker()
    })
    await this.tracker.start()
    this.notifier = createNotifier(this.tracker)
  }

  checkTracker(): void {
    for (const [writer, position] of this.tracker.positions()) this.checkWriter('tracker', writer, position, this.lastTracker)
    const linear = this.tracker.linearPosition()
    const min = this.minUnfinished()
    if (min !== undefined && linear >= min) this.fail(`linear position ${linear} reached unfinished ${min}`)
    if (linear < this.lastTrackerLinear) this.fail(`linear position went back to ${linear}`)
    this.lastTrackerLinear = linear
  }

  async startWriter(name: string): Promise<void> {
    const handle = createDatabase({ url: this.t.url, poolSize: 6 })
    const bus = createMemoryBus({ hub: this.hub, log })
    await bus.start()
    const generator = await createIdGenerator({ db: handle.db, stream: 'events', writer: name, writers: writerNames, bus, log, announceIntervalMs: 25 })
    this.running.set(name, { handle, bus, generator })
  }

  async begin(action: Extract<Action, { kind: 'begin' }>): Promise<void> {
    const name = writerNames[action.writer]
    if (!this.running.has(name)) await this.startWriter(name)
    if (this.open.filter((tx) => tx.writer === name).length >= 3) return
    const { generator } = this.running.get(name)!
    const decision = deferred<'commit' | 'rollback' | 'crash'>()
    const allocated = deferred()
    const ids: bigint[] = []
    const unfinished = this.unfinished.get(name)!
    const room = this.rooms[action.room]!
    const done = generator
      .transaction(async (trx, allocate) => {
        try {
          ids.push(...(await allocate(action.n, [room])))
          for (const id of ids) unfinished.add(id)
          allocated.resolve()
          for (const id of ids) await insertEventRow(trx, room, id, name)
          const outcome = await decision.promise
          if (outcome !== 'commit') throw new Error(outcome)
        } finally {
          // After a crash the IDs stay unfinished until the backend is gone (see crash()).
          if (this.running.get(name)?.generator === generator) for (const id of ids) unfinished.delete(id)
        }
      })
      .catch(() => undefined)
    this.open.push({ writer: name, ids, decide: decision.resolve, done })
    await Promise.race([allocated.promise, done])
  }

  async finish(pick: number, decision: 'commit' | 'rollback'): Promise<void> {
    if (this.open.length === 0) return
    const [tx] = this.open.splice(pick % this.open.length, 1) as [OpenTransaction]
    tx.decide(decision)
    await tx.done
  }

  /**
   * A crash, as the database and the peers see it: the writer goes silent (its bus closes, its
   * pool ends so it can store nothing more) and its open transactions roll back without it
   * ever finishing them. (Terminating the backends instead would crash this test process: pg
   * emits an unhandled 'error' on a checked-out idle client. The multi-process test SIGKILLs
   * real writers.)
   */
  async crash(writer: WriterIndex): Promise<void> {
    const name = writerNames[writer]
    const incarnation = this.running.get(name)
    if (!incarnation) return
    this.running.delete(name)
    await incarnation.bus.close()
    // Timer and subscriptions stop first: a query queued for a connection just before the pool
    // ends would wait for pg-pool's connect timeout.
    await incarnation.generator.close()
    const closing = incarnation.handle.close()
    const dead = this.open.filter((tx) => tx.writer === name)
    for (const tx of dead) {
      this.open.splice(this.open.indexOf(tx), 1)
      tx.decide('crash')
    }
    await Promise.all(dead.map((tx) => tx.done))
    // Rolled back now: the IDs are gaps.
    this.unfinished.get(name)!.clear()
    await closing
  }

  async read(): Promise<void> {
    await this.checkRoomsChanged()
    const positions = this.tracker.positions()
    for (const name of writerNames) {
      const upTo = positions.get(name)
      if (upTo === undefined) continue
      const from = this.readUpTo.get(name) ?? 0n
      if (upTo <= from) continue
      const rows = await this.t.db
        .selectFrom('events')
        .select('stream_ordering')
        .where('instance_name', '=', name)
        .where('stream_ordering', '>', from)
        .where('stream_ordering', '<=', upTo)
        .execute()
      for (const row of rows) this.seen.add(BigInt(row.stream_ordering))
      this.readUpTo.set(name, upTo)
    }
    const linear = this.tracker.linearPosition()
    if (linear > this.lastLinear) {
      const rows = await this.t.db
        .selectFrom('events')
        .select('stream_ordering')
        .where('stream_ordering', '>', this.lastLinear)
        .where('stream_ordering', '<=', linear)
        .execute()
      for (const row of rows) this.seenLinear.add(BigInt(row.stream_ordering))
      this.lastLinear = linear
    }
    const stored = await this.t.db.selectFrom('stream_positions').select(['instance_name', 'stream_id']).where('stream_name', '=', 'events').execute()
    for (const row of stored) this.checkWriter('stream_positions', row.instance_name, BigInt(row.stream_id), this.lastStored)
  }

  /** `notifier.roomsChangedAfter` from every earlier read's token misses no room with rows after it. */
  async checkRoomsChanged(): Promise<void> {
    const upTo = this.tracker.currentToken()
    const answers = this.readTokens.map((after) => ({ after, answer: this.notifier.roomsChangedAfter(this.rooms, after) }))
    const rows = await this.t.db.selectFrom('events').select(['room_id', 'stream_ordering', 'instance_name']).execute()
    const isAfter = (token: RoomStreamToken, writer: string, position: bigint) => {
      const id = this.tracker.writerId(writer)
      return id === undefined ? position > token.stream : token.isRowAfter(id, position)
    }
    for (const { after, answer } of answers) {
      if (answer === undefined) continue
      World.roomsChangedAnswers++
      for (const row of rows) {
        const position = BigInt(row.stream_ordering)
        if (isAfter(after, row.instance_name, position) && !isAfter(upTo, row.instance_name, position) && !answer.has(row.room_id)) {
          this.fail(`roomsChangedAfter(${after.toString()}) missed ${row.room_id} (row ${position} of ${row.instance_name})`)
        }
      }
    }
    this.readTokens.push(upTo)
  }

  checkGenerators(): void {
    for (const [name, { generator }] of this.running) {
      const min = this.minUnfinished(name)
      if (min !== undefined && generator.position() >= min) this.fail(`generator ${name} at ${generator.position()} with unfinished ${min}`)
    }
    this.checkTracker()
  }

  async settle(): Promise<void> {
    for (const tx of this.open.splice(0)) {
      tx.decide('commit')
      await tx.done
    }
    for (const name of writerNames) if (!this.running.has(name)) await this.startWriter(name)
    const max = await readMaxAllocated(this.t.db, 'events')
    await eventually(
      () => writerNames.every((w) => this.running.get(w)!.generator.position() === max && this.tracker.positions().get(w) === max),
      'writers and tracker to converge on the sequence',
    )
    expect(this.tracker.linearPosition()).to.equal(max)
    await this.read()
    const committed = await this.t.db.selectFrom('events').select('stream_ordering').execute()
    for (const { stream_ordering } of committed) {
      const id = BigInt(stream_ordering)
      if (!this.seen.has(id)) this.fail(`row ${id} was skipped by the per-writer reader`)
      if (!this.seenLinear.has(id)) this.fail(`row ${id} was skipped by the linear reader`)
    }
  }

  async close(): Promise<void> {
    for (const tx of this.open.splice(0)) tx.decide('rollback')
    await this.tracker?.close()
    for (const { generator, bus, handle } of this.running.values()) {
      await generator.close()
      await bus.close()
      await handle.close()
    }
    await this.trackerBus?.close()
    await this.spy?.close()
  }
}

describe('multi-writer streams under random interleavings (property)', function () {
  this.timeout(60_000)

  it('should keep every position invariant and let the reader skip nothing', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(actionArb, { minLength: 5, maxLength: 30 }), async (actions) => {
        const t = await createTestDatabase({ poolSize: 4 })
        const world = new World(t, [await createRoom(t.db), await createRoom(t.db)])
        try {
          await world.start()
          for (const action of actions) {
            if (action.kind === 'begin') await world.begin(action)
            else if (action.kind === 'commit' || action.kind === 'rollback') await world.finish(action.pick, action.kind)
            else if (action.kind === 'crash') await world.crash(action.writer)
            else if (action.kind === 'read') await world.read()
            else if (action.kind === 'restartReader') await world.startTracker()
            else if (action.kind === 'sleep') await new Promise((resolve) => setTimeout(resolve, action.ms))
            world.checkGenerators()
          }
          await world.settle()
          expect(world.failures).to.deep.equal([])
        } finally {
          await world.close()
          await t.drop()
        }
      }),
      { numRuns: 15 },
    )
    expect(World.roomsChangedAnswers).to.be.greaterThan(0)
  })
})
