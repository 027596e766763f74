import type { Kysely } from 'kysely'
import type { Registry } from 'prom-client'
import type { Bus, BusState } from '../bus/bus.js'
import type { BusMessage } from '../bus/bus-message.js'
import type { Logger } from '../logger.js'
import type { Database } from '../schema.js'
import { loadInstanceIds } from './instances.js'
import { RoomStreamToken } from './room-stream-token.js'
import { readCommittedIds, readMaxAllocated, type MultiWriterStream } from './stream-sequence.js'
import { createStreamTrackerMetrics, type CatchUpReason, type StreamTrackerMetrics } from './stream-tracker-metrics.js'
import type { RoomHint } from './writer-position.js'

/** `push`: positions arrive on the bus; `polling`: the bus is down (or absent), `stream_positions` is polled. */
export type TrackerMode = 'push' | 'polling'

/** Called when `writer` advanced from `prev` to `next`; `rooms` is the hint (absent = any room). */
export type AdvanceListener = (writer: string, prev: bigint, next: bigint, rooms: RoomHint) => void

/**
 * The reader side of a multi-writer stream: every writer's known position, one tracker per
 * process and stream (ARCHITECTURE §2 step 9, §3, §5).
 *
 * Guarantees:
 * - Every position it reports was announced by its writer on the bus or read from
 *   `stream_positions`, so every row of writer `w` at or below `positions().get(w)` is
 *   committed or will never exist. Positions and the linear position never go backwards.
 * - `linearPosition()` = the minimum over known writers, extended over gap-free runs of
 *   committed `events` rows when it is stuck for a poll interval: every ID at or below it is
 *   finished. It never passes an unfinished ID of a writer this tracker knows (writers register
 *   a row in `stream_positions` before allocating, and the tracker re-reads those rows on
 *   every bus `up`, on gaps, while polling and every 5 s).
 * - A POSITION whose `prev` is above the known position (missed messages) triggers a catch-up
 *   from `stream_positions` first, and its listeners get no room hint (any room).
 * - Messages and catch-ups are processed one at a time, in arrival order.
 * - While the bus is down or absent, `stream_positions` is polled every `pollIntervalMs`; the
 *   switch is logged (warn / info), visible in `mode` and in the metric
 *   `myelin_stream_tracker_polling`.
 */
export interface StreamTracker {
  /** Loads positions and instance IDs from Postgres and subscribes to the bus. Rejects when Postgres cannot be read. */
  start(): Promise<void>
  /** Known position of every writer (a copy). */
  positions(): ReadonlyMap<string, bigint>
  /** Every ID at or below it is finished (committed or rolled back) on every writer. */
  linearPosition(): bigint
  /** Vector token of what this process may serve: `m<linear>~<writerId>.<pos>…`, or `s<linear>`. */
  currentToken(): RoomStreamToken
  /** True when every row the token covers is covered by `currentToken()` (a historic token: its stream part ≤ linear). */
  covers(token: RoomStreamToken): boolean
  /**
   * True when `currentToken()` covers rows after `after` that no advance announced: the linear
   * position ran over committed rows above a writer's known position (a writer that died
   * before announcing them) and past `after`. Readers that follow advances (their hints) must
   * read such a range from the database.
   */
  ranOverUnannounced(after: RoomStreamToken): boolean
  /** A token from the future (forged, from before a restore) clamped to the highest allocated ID; others unchanged. */
  clamp(token: RoomStreamToken): Promise<RoomStreamToken>
  /** Resolves true once `covers(token)`, false after `timeoutMs` or on `close()`. */
  waitFor(token: RoomStreamToken, timeoutMs: number): Promise<boolean>
  /** Registers a listener of advances; returns its remover. Listeners run synchronously; a throwing one is logged. */
  onAdvance(listener: AdvanceListener): () => void
  /** Instance ID of a writer, when registered. */
  writerId(name: string): number | undefined
  /** Current mode; `polling` before `start()`. */
  readonly mode: TrackerMode
  /** Stops timers and the bus subscription, resolves pending `waitFor` with false. Idempotent. Does not close the bus. */
  close(): Promise<void>
}

/** Options of `createStreamTracker`. */
export interface StreamTrackerOptions {
  db: Kysely<Database>
  /** Started by the caller; without one the tracker always polls. */
  bus?: Bus
  /** Default `events`. */
  stream?: MultiWriterStream
  log: Logger
  /** Poll interval while the bus is down, and stuck-linear check interval; default 250 ms. */
  pollIntervalMs?: number
  /** Name in the REPLICATE this tracker sends on every bus `up`; default `reader-<pid>`. */
  name?: string
  /** Registry for the tracker's metrics (see `createStreamTrackerMetrics`). */
  registry?: Registry
}

/** Interval of the full re-read of `stream_positions` while the bus is up. */
const refreshIntervalMs = 5000
/** Most committed IDs read per extension of the linear position. */
const extensionBatch = 1000

/**
 * Creates a tracker; call `start()` before use.
 *
 * @example
 * const tracker = createStreamTracker({ db, bus, log })
 * await tracker.start()
 * const token = await tracker.clamp(parseRoomStreamToken(since))
 * if (!(await tracker.waitFor(token, 10_000))) return emptySyncResponse(since)
 * tracker.currentToken().toString() // 'm105~1.108'
 */
export function createStreamTracker(options: StreamTrackerOptions): StreamTracker {
  return new Tracker(options)
}

interface Waiter {
  readonly token: RoomStreamToken
  readonly resolve: (covered: boolean) => void
}

class Tracker implements StreamTracker {
  readonly #db: Kysely<Database>
  readonly #bus: Bus | undefined
  readonly #stream: MultiWriterStream
  readonly #log: Logger
  readonly #pollIntervalMs: number
  readonly #name: string
  readonly #metrics: StreamTrackerMetrics
  readonly #positions = new Map<string, bigint>()
  /** Invariant: every ID ≤ it is finished; never decreases. */
  #linear = 0n
  #ids = new Map<string, number>()
  readonly #listeners = new Set<AdvanceListener>()
  readonly #waiters = new Set<Waiter>()
  /** Serializes message handling and catch-ups. */
  #queue: Promise<void> = Promise.resolve()
  #mode: TrackerMode = 'polling'
  #timer: NodeJS.Timeout | undefined
  #timerJobQueued = false
  #lastRefresh = 0
  /** Linear position at the previous timer tick, to detect a stuck one. */
  #linearAtLastTick: bigint | undefined
  #unsubscribe: (() => void)[] = []
  #starting: Promise<void> | undefined
  #closed = false

  constructor(options: StreamTrackerOptions) {
    this.#db = options.db
    this.#bus = options.bus
    this.#stream = options.stream ?? 'events'
    this.#pollIntervalMs = options.pollIntervalMs ?? 250
    this.#name = options.name ?? `reader-${process.pid}`
    this.#log = options.log.child({ component: 'stream-tracker', stream: this.#stream })
    this.#metrics = createStreamTrackerMetrics(options.registry)
  }

  get mode(): TrackerMode {
    return this.#mode
  }

  start(): Promise<void> {
    this.#starting ??= this.#start()
    return this.#starting
  }

  async #start(): Promise<void> {
    const bus = this.#bus
    if (bus) {
      // Subscribe before the first read, so nothing published after that read is missed.
      this.#unsubscribe.push(
        bus.subscribe((message) => {
          if (message.type === 'POSITION' && message.stream === this.#stream) {
            void this.#enqueue(() => this.#onPosition(message)).catch(() => {})
          }
        }),
        bus.onStateChange((state) => this.#onBusState(state)),
      )
    }
    await this.#enqueue(() => this.#catchUp('start'))
    this.#lastRefresh = Date.now()
    this.#metrics.polling(this.#stream, true)
    if (bus?.state === 'up') this.#onBusState('up', false)
    else this.#log.warn({ pollIntervalMs: this.#pollIntervalMs, bus: bus ? 'down' : 'none' }, 'no bus: polling stream_positions')
    this.#timer = setInterval(() => this.#onTimer(), this.#pollIntervalMs)
    this.#timer.unref()
  }

  positions(): ReadonlyMap<string, bigint> {
    return new Map(this.#positions)
  }

  linearPosition(): bigint {
    return this.#linear
  }

  currentToken(): RoomStreamToken {
    const byId = new Map<number, bigint>()
    for (const [writer, position] of this.#positions) {
      const id = this.#ids.get(writer)
      if (id !== undefined) byId.set(id, position)
    }
    return RoomStreamToken.fromPositions(this.#linear, byId)
  }

  covers(token: RoomStreamToken): boolean {
    if (token.isHistoric) return token.stream <= this.#linear
    return token.isBeforeOrEqual(this.currentToken())
  }

  ranOverUnannounced(after: RoomStreamToken): boolean {
    for (const [writer, position] of this.#positions) {
      if (position >= this.#linear) continue
      const id = this.#ids.get(writer)
      if (this.#linear > (id === undefined ? after.stream : after.positionOf(id))) return true
    }
    return false
  }

  async clamp(token: RoomStreamToken): Promise<RoomStreamToken> {
    if (this.covers(token)) return token
    const maxAllocated = await readMaxAllocated(this.#db, this.#stream)
    const highest = token.isHistoric ? token.stream : token.maxPosition()
    if (highest <= maxAllocated) return token
    this.#log.info({ token: token.toString(), maxAllocated: String(maxAllocated) }, 'stream token from the future clamped')
    return token.clampTo(maxAllocated)
  }

  waitFor(token: RoomStreamToken, timeoutMs: number): Promise<boolean> {
    if (this.covers(token)) return Promise.resolve(true)
    if (this.#closed) return Promise.resolve(false)
    return new Promise((resolve) => {
      const waiter: Waiter = {
        token,
        resolve: (covered) => {
          clearTimeout(timer)
          this.#waiters.delete(waiter)
          resolve(covered)
        },
      }
      const timer = setTimeout(() => waiter.resolve(false), timeoutMs)
      this.#waiters.add(waiter)
    })
  }

  onAdvance(listener: AdvanceListener): () => void {
    const entry: AdvanceListener = (...args) => listener(...args)
    this.#listeners.add(entry)
    return () => void this.#listeners.delete(entry)
  }

  writerId(name: string): number | undefined {
    return this.#ids.get(name)
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    clearInterval(this.#timer)
    for (const unsubscribe of this.#unsubscribe) unsubscribe()
    this.#unsubscribe = []
    for (const waiter of [...this.#waiters]) waiter.resolve(false)
    this.#listeners.clear()
    await this.#queue
  }

  /** Runs `job` after every queued one; its failure rejects the returned promise only. */
  #enqueue(job: () => Promise<void>): Promise<void> {
    const run = this.#queue.then(() => (this.#closed ? undefined : job()))
    this.#queue = run.catch((err: unknown) => this.#log.warn({ err }, 'stream tracker update failed'))
    return run
  }

  #onBusState(state: BusState, catchUp = true): void {
    if (this.#closed) return
    if (state === 'up') {
      if (catchUp) void this.#enqueue(() => this.#catchUp('reconnect')).catch(() => {})
      if (this.#mode !== 'push') {
        this.#mode = 'push'
        this.#metrics.polling(this.#stream, false)
        this.#log.info('bus up: stream positions pushed again')
      }
      this.#bus?.publish({ type: 'REPLICATE', from: this.#name }).catch((err: unknown) => {
        this.#log.debug({ err }, 'could not ask writers to announce')
      })
    } else if (this.#mode !== 'polling') {
      this.#mode = 'polling'
      this.#metrics.polling(this.#stream, true)
      this.#log.warn({ pollIntervalMs: this.#pollIntervalMs }, 'bus down: polling stream_positions')
    }
  }

  #onTimer(): void {
    if (this.#closed || this.#timerJobQueued) return
    const now = Date.now()
    const poll = this.#mode === 'polling' || now - this.#lastRefresh >= refreshIntervalMs
    const linear = this.#linear
    const stuck = linear === this.#linearAtLastTick && linear < this.#maxPosition()
    this.#linearAtLastTick = linear
    if (!poll && !stuck) return
    this.#timerJobQueued = true
    void this.#enqueue(async () => {
      this.#timerJobQueued = false
      if (poll) {
        this.#lastRefresh = now
        await this.#catchUp(this.#mode === 'polling' ? 'poll' : 'refresh')
      }
      if (stuck) await this.#extendLinear()
    }).catch(() => {
      this.#timerJobQueued = false
    })
  }

  async #onPosition(message: Extract<BusMessage, { type: 'POSITION' }>): Promise<void> {
    const { writer, prev, next, rooms } = message
    const known = this.#positions.get(writer)
    if (known !== undefined && next <= known) return
    if (!this.#ids.has(writer)) await this.#loadIds()
    if (prev > (known ?? this.#linear)) {
      // Missed messages of this writer, possibly of others: their room hints are lost.
      await this.#catchUp('gap')
      this.#advance(writer, next, undefined)
    } else {
      this.#advance(writer, next, rooms)
    }
  }

  /** Reads `stream_positions` (and instance IDs): advances writers without a hint, forgets removed ones. */
  async #catchUp(reason: CatchUpReason): Promise<void> {
    this.#metrics.catchUp(this.#stream, reason)
    const rows = await this.#db
      .selectFrom('stream_positions')
      .select(['instance_name', 'stream_id'])
      .where('stream_name', '=', this.#stream)
      .execute()
    await this.#loadIds()
    const stored = new Set(rows.map((row) => row.instance_name))
    for (const writer of [...this.#positions.keys()]) {
      if (stored.has(writer)) continue
      // Writers register their row before allocating; no row means reconciliation removed it.
      this.#positions.delete(writer)
      this.#log.info({ writer }, 'writer no longer in stream_positions: forgotten')
    }
    this.#advanceMany(
      rows.map((row) => [row.instance_name, BigInt(row.stream_id)] as const),
      undefined,
    )
    this.#recomputeLinear()
  }

  async #loadIds(): Promise<void> {
    this.#ids = await loadInstanceIds(this.#db)
  }

  /**
   * Raises the linear position over committed `events` rows directly above it, up to the
   * highest known position: every ID in such a run is finished, whichever writer holds it.
   */
  async #extendLinear(): Promise<void> {
    const from = this.#linear
    const upTo = this.#maxPosition()
    if (from >= upTo) return
    const ids = await readCommittedIds(this.#db, this.#stream, from, upTo, extensionBatch)
    let run = from
    for (const id of ids) {
      if (id !== run + 1n) break
      run = id
    }
    if (run > this.#linear) {
      this.#log.debug({ from: String(from), to: String(run) }, 'linear position extended over committed rows')
      this.#linear = run
      this.#checkWaiters()
    }
  }

  #advance(writer: string, next: bigint, rooms: RoomHint): void {
    this.#advanceMany([[writer, next]], rooms)
  }

  /**
   * Applies several writers' positions at once, before recomputing the linear position (one
   * at a time, the first writers applied would form the minimum without the others).
   */
  #advanceMany(updates: readonly (readonly [string, bigint])[], rooms: RoomHint): void {
    const linearBefore = this.#linear
    const advanced: [string, bigint, bigint][] = []
    for (const [writer, next] of updates) {
      const known = this.#positions.get(writer)
      if (known !== undefined && next <= known) continue
      this.#positions.set(writer, next)
      advanced.push([writer, known ?? linearBefore, next])
    }
    this.#recomputeLinear()
    for (const [writer, prev, next] of advanced) {
      if (next <= prev) continue
      for (const listener of this.#listeners) {
        try {
          listener(writer, prev, next, rooms)
        } catch (err) {
          this.#log.error({ err, writer }, 'stream advance listener failed')
        }
      }
    }
    this.#checkWaiters()
  }

  #recomputeLinear(): void {
    let min: bigint | undefined
    for (const position of this.#positions.values()) if (min === undefined || position < min) min = position
    if (min !== undefined && min > this.#linear) this.#linear = min
  }

  #maxPosition(): bigint {
    let max = this.#linear
    for (const position of this.#positions.values()) if (position > max) max = position
    return max
  }

  #checkWaiters(): void {
    if (this.#waiters.size === 0) return
    const current = this.currentToken()
    for (const waiter of [...this.#waiters]) {
      const covered = waiter.token.isHistoric ? waiter.token.stream <= this.#linear : waiter.token.isBeforeOrEqual(current)
      if (covered) waiter.resolve(true)
    }
  }
}
