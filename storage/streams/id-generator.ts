import { sql, type Kysely, type Transaction } from 'kysely'
import type { Bus } from '../bus/bus.js'
import type { BusMessage } from '../bus/bus-message.js'
import { StorageError } from '../errors.js'
import type { Logger } from '../logger.js'
import type { Database } from '../schema.js'
import { ensureInstanceId } from './instances.js'
import { reconcileStream } from './reconcile-stream.js'
import { readMaxAllocated, sequenceName, toStreamOrdering, type MultiWriterStream } from './stream-sequence.js'
import { WriterPosition, type AllocatedId } from './writer-position.js'

export type { MultiWriterStream } from './stream-sequence.js'

/** Options of `createIdGenerator`. */
export interface IdGeneratorOptions {
  db: Kysely<Database>
  stream: MultiWriterStream
  /** This writer's name (`instances.instance_name`); MUST be in `writers`. */
  writer: string
  /** All configured writers of this stream; rows of others in `stream_positions` are deleted at startup. */
  writers: readonly string[]
  /** Where positions are announced; without one, readers learn them by polling `stream_positions`. */
  bus?: Bus
  log: Logger
  /** Interval of the idle advance and re-announcement; default 1,000 ms. */
  announceIntervalMs?: number
  /**
   * With the bus up, the least time between two background writes of `stream_positions`
   * (default 50 ms): each is a commit with its own WAL flush, and readers only read the row to
   * catch up. Without the bus every position is stored before its transaction resolves.
   */
  storeIntervalMs?: number
}

/** Allocates `n` IDs inside the caller's transaction; see `MultiWriterIdGenerator.transaction`. */
export type AllocateIds = (n: number, rooms?: readonly string[]) => Promise<bigint[]>

/**
 * The writer side of a multi-writer stream (ARCHITECTURE §3; Synapse `MultiWriterIdGenerator`,
 * reference section 1). One per writer process and stream.
 *
 * Guarantees:
 * - `position()` never decreases and never reaches one of this writer's unfinished IDs; an
 *   idle writer advances it to the highest ID the sequence handed out (so an idle writer never
 *   pins the linear position, Synapse #15595).
 * - After every transaction, and at least every `announceIntervalMs`, the position is stored
 *   in `stream_positions` (`GREATEST`, its own statement, after the transaction ended: it only
 *   ever increases and never covers an uncommitted row; with the bus up it is written in the
 *   background after publishing, at most once per `storeIntervalMs`, without it before the
 *   transaction resolves) and
 *   announced on the bus as `POSITION stream writer prev next rooms`, where `rooms` merges the
 *   hints of the committed IDs in (prev, next], or is absent (any room) over rows it cannot
 *   vouch for: an earlier process's never-announced rows above the stored position at start,
 *   and the rows of a COMMIT that failed with no answer from the database. Announcements of
 *   one generator are published in order, with `prev` = the previous announcement's `next`.
 * - When `createIdGenerator` resolves, the starting position is announced and stored, so a
 *   reader that starts later finds it in `stream_positions`.
 * - A REPLICATE on the bus, and every bus `up`, is answered by announcing.
 * - Failures to store or publish a position are logged and retried on the next announcement;
 *   they never fail a transaction that committed.
 */
export interface MultiWriterIdGenerator {
  readonly stream: MultiWriterStream
  readonly writer: string
  /**
   * Runs `fn` in ONE Postgres transaction. `allocate(n, rooms?)` fetches `n` IDs from the
   * sequence in one round trip, inside that transaction, when the caller calls it (call it as
   * late as possible: every later ID's visibility waits for this transaction). `rooms` is the
   * hint announced with them (absent = any room). For `backfill` the IDs are negative
   * (-2, -3, …) and ascending in absolute value; for `events` ascending.
   *
   * After commit or rollback the IDs are finished, the position advances and the POSITION is
   * published before this resolves (`stream_positions` too when the bus is not up; with the
   * bus up it is upserted just after, in the background). Errors of `fn` (or of
   * the commit) are rethrown after that cleanup. Concurrent calls are allowed.
   *
   * @throws StorageError `ES_UNAVAILABLE` after `close()`; `ES_INVALID_PARAM` from `allocate`
   *   for a count that is not an integer in [0, 100000], or when called after `fn` returned.
   * @example
   * const eventId = await events.transaction(async (trx, allocate) => {
   *   // … authorize, build the event …
   *   const [streamOrdering] = await allocate(1, [roomId])
   *   await trx.insertInto('events').values({ stream_ordering: streamOrdering!, … }).execute()
   *   return '$event'
   * })
   */
  transaction<T>(fn: (trx: Transaction<Database>, allocate: AllocateIds) => Promise<T>): Promise<T>
  /**
   * Runs ONE statement outside any transaction block (it commits on its own) that allocates
   * IDs itself with `nextval(sequence)` and answers the IDs it took, ascending, with its
   * result. Like `transaction`, resolves after the position covering them was published; while
   * it runs, the position stays below any ID it may take. For the `events` stream only (the IDs
   * are the stream orderings). A persist costs one round trip this way instead of five
   * (begin, lock, allocate, write, commit).
   *
   * @example
   * const { ok } = await events.statement(['!r:hs'], async (db, sequence) => {
   *   const row = await runGuardedWrite(db, sequence)  // INSERT … nextval(sequence) … RETURNING
   *   return { ids: row.ids, result: { ok: row.ok } }
   * })
   */
  statement<T>(
    rooms: readonly string[] | undefined,
    run: (db: Kysely<Database>, sequence: string) => Promise<{ readonly ids: readonly bigint[]; readonly result: T }>,
  ): Promise<T>
  /** This writer's current advertised position (positive for `backfill` too). */
  position(): bigint
  /** Stops the re-announce timer and the bus subscription; later transactions reject. Idempotent. */
  close(): Promise<void>
}

/** Most IDs one `allocate` call may fetch. */
export const maxAllocation = 100_000

/**
 * Runs startup reconciliation (`reconcileStream`), registers the writer's instance ID, starts
 * announcing (now, on every bus `up` and REPLICATE, and every `announceIntervalMs`) and returns
 * the generator.
 *
 * Caller duties: start the bus (before or after; announcements wait for its `up`); `close()`
 * the generator before the bus and the database. A writer whose previous process was killed
 * MUST NOT be restarted while that process's transactions may still commit (a killed client's
 * backend aborts its open transaction as soon as it notices the closed socket).
 *
 * @throws StorageError `ES_CONFIG_INVALID` when `writer` is not in `writers`.
 * @example
 * const events = await createIdGenerator({ db, stream: 'events', writer: 'persister1', writers: ['persister1', 'persister2'], bus, log })
 * await events.transaction(async (trx, allocate) => { const [id] = await allocate(1, ['!room:hs']); … })
 * await events.close()
 */
export async function createIdGenerator(options: IdGeneratorOptions): Promise<MultiWriterIdGenerator> {
  const { db, stream, writer, writers } = options
  if (!writers.includes(writer)) {
    throw new StorageError('ES_CONFIG_INVALID', `writer ${JSON.stringify(writer)} is not a configured writer of the ${stream} stream`)
  }
  const log = options.log.child({ component: 'id-generator', stream, writer })
  const reconciled = await reconcileStream(db, { stream, writer, writers, log })
  await ensureInstanceId(db, writer)
  const generator = new IdGenerator(options, log, new WriterPosition(reconciled.position, reconciled.maxAllocated), reconciled.position)
  await generator.start()
  return generator
}

class IdGenerator implements MultiWriterIdGenerator {
  readonly stream: MultiWriterStream
  readonly writer: string
  readonly #db: Kysely<Database>
  readonly #bus: Bus | undefined
  readonly #log: Logger
  readonly #announceIntervalMs: number
  readonly #state: WriterPosition
  /** `next` of the last announcement (published or not). */
  #announced: bigint
  /** Highest position known to be in `stream_positions`. */
  #stored: bigint
  /** Serializes announcements, so they leave in position order. */
  #announceTail: Promise<void> = Promise.resolve()
  /**
   * Writes `stream_positions` in the background, coalescing requests made while one runs or
   * during the pause after it.
   */
  readonly #storer = coalescing(async () => {
    await this.#store(this.#state.position)
    if (!this.#closed) await this.#pause(this.#storeIntervalMs)
  })
  readonly #storeIntervalMs: number
  /** Ends the storer's pause early (on close). */
  #endPause: (() => void) | undefined
  #timer: NodeJS.Timeout | undefined
  #unsubscribe: (() => void)[] = []
  /** Reads the sequence and announces if that advanced this writer; coalesced. */
  readonly #refresher = coalescing(async () => {
    const before = this.#state.position
    await this.#refreshSequence()
    if (this.#state.position > before) await this.#announce(false)
  }, () => !this.#closed)
  /** Highest position a peer announced (a hint to read the sequence, never trusted as a value). */
  #peerMax = 0n
  #ticking = false
  #closed = false

  constructor(options: IdGeneratorOptions, log: Logger, state: WriterPosition, stored: bigint) {
    this.stream = options.stream
    this.writer = options.writer
    this.#db = options.db
    this.#bus = options.bus
    this.#log = log
    this.#announceIntervalMs = options.announceIntervalMs ?? 1000
    this.#storeIntervalMs = options.storeIntervalMs ?? 50
    this.#state = state
    this.#announced = stored
    this.#stored = stored
  }

  async start(): Promise<void> {
    if (this.#bus) {
      const bus = this.#bus
      this.#unsubscribe.push(
        bus.subscribe((message) => this.#onMessage(message)),
        bus.onStateChange((state) => {
          if (state === 'up') void this.#announce(true)
        }),
      )
    }
    this.#timer = setInterval(() => void this.#tick(), this.#announceIntervalMs)
    this.#timer.unref()
    await this.#announce(true)
    // Readers that start after this one read its position from the table, not the bus message
    // they were too late for: the row is current before start() resolves.
    await this.#store(this.#state.position)
  }

  position(): bigint {
    return this.#state.position
  }

  async transaction<T>(fn: (trx: Transaction<Database>, allocate: AllocateIds) => Promise<T>): Promise<T> {
    this.#assertOpen()
    const allocated: AllocatedId[] = []
    let open = true
    const allocate = async (trx: Transaction<Database>, n: number, rooms: readonly string[] | undefined): Promise<bigint[]> => {
      if (!open) throw new StorageError('ES_INVALID_PARAM', 'allocate was called after its transaction ended')
      if (!Number.isInteger(n) || n < 0 || n > maxAllocation) {
        throw new StorageError('ES_INVALID_PARAM', `cannot allocate ${n} stream IDs (an integer in [0, ${maxAllocation}])`)
      }
      if (n === 0) return []
      const fetch = this.#state.beginFetch()
      let ids: bigint[]
      try {
        const { rows } = await sql<{ id: bigint | string }>`
          SELECT nextval(${sequenceName(this.stream)}::regclass) AS id FROM generate_series(1, ${n})`.execute(trx)
        ids = rows.map((row) => BigInt(row.id)).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
      } catch (err) {
        this.#state.endFetch(fetch, undefined)
        throw err
      }
      this.#state.endFetch(fetch, ids)
      const entries = ids.map((id) => ({ id, rooms }))
      if (!open) {
        // `fn` returned without awaiting this call: the IDs can no longer be written.
        this.#state.finish(entries, false)
        throw new StorageError('ES_INVALID_PARAM', 'allocate was not awaited before its transaction ended')
      }
      allocated.push(...entries)
      return ids.map((id) => toStreamOrdering(this.stream, id))
    }

    let committed = false
    let bodyDone = false
    let result: T | undefined
    let failure: unknown
    try {
      result = await this.#db.transaction().execute(async (trx) => {
        const value = await fn(trx, (n, rooms) => allocate(trx, n, rooms))
        bodyDone = true
        return value
      })
      committed = true
    } catch (err) {
      failure = err
    }
    open = false
    this.#state.finish(allocated, committed)
    // A failure of `fn` rolled back for sure; one of the COMMIT may hide a commit.
    if (!committed && bodyDone) this.#afterFailure(failure)
    this.#followPeers()
    await this.#announce(false)
    if (!committed) throw failure
    return result as T
  }

  async statement<T>(
    rooms: readonly string[] | undefined,
    run: (db: Kysely<Database>, sequence: string) => Promise<{ readonly ids: readonly bigint[]; readonly result: T }>,
  ): Promise<T> {
    this.#assertOpen()
    if (this.stream !== 'events') throw new StorageError('ES_INVALID_PARAM', 'statement() allocates positive IDs: events stream only')
    const fetch = this.#state.beginFetch()
    let outcome: { readonly ids: readonly bigint[]; readonly result: T }
    try {
      outcome = await run(this.#db, sequenceName(this.stream))
    } catch (err) {
      // Whatever the statement allocated was rolled back with it (gaps), unless the connection
      // was lost around the commit.
      this.#state.endFetch(fetch, undefined)
      this.#afterFailure(err)
      this.#followPeers()
      throw err
    }
    const ids = [...outcome.ids].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
    this.#state.endFetch(fetch, ids)
    this.#state.finish(
      ids.map((id) => ({ id, rooms })),
      true,
    )
    this.#followPeers()
    await this.#announce(false)
    return outcome.result
  }

  #assertOpen(): void {
    if (this.#closed) throw new StorageError('ES_UNAVAILABLE', `the ${this.stream} ID generator of ${this.writer} is closed`)
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    clearInterval(this.#timer)
    for (const unsubscribe of this.#unsubscribe) unsubscribe()
    this.#unsubscribe = []
    await this.#announceTail
    await this.#refresher.current()
    this.#endPause?.()
    await this.#storer.current()
    await this.#store(this.#state.position)
  }

  #pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms)
      function done(): void {
        clearTimeout(timer)
        resolve()
      }
      this.#endPause = done
    })
  }

  #onMessage(message: BusMessage): void {
    if (this.#closed) return
    if (message.type === 'REPLICATE') {
      void this.#announce(true)
      return
    }
    if (message.stream !== this.stream || message.writer === this.writer) return
    if (message.next > this.#peerMax) this.#peerMax = message.next
    this.#followPeers()
  }

  /**
   * A peer advanced past what this writer has seen: when idle, follow at once (through the
   * sequence, never the peer's claim; see WriterPosition) instead of at the next tick.
   */
  #followPeers(): void {
    if (!this.#closed && this.#state.idle && this.#peerMax > this.#state.maxSeen) void this.#refresher.run()
  }

  async #tick(): Promise<void> {
    if (this.#ticking) return
    this.#ticking = true
    try {
      if (this.#state.unknownPending) await this.#boundUnknown()
      await this.#refreshSequence()
      await this.#announce(true)
    } finally {
      this.#ticking = false
    }
  }



  /**
   * A failed transaction or statement whose commit may have happened (no answer from the
   * database) may have left rows without a hint: announcements say "any room" until the
   * sequence, read after the failure, bounds them (WriterPosition.outcomeUnknown).
   */
  #afterFailure(err: unknown): void {
    if (!mayHaveCommitted(err)) return
    this.#state.outcomeUnknown()
    void this.#boundUnknown()
  }

  async #boundUnknown(): Promise<void> {
    const epoch = this.#state.unknownEpoch
    try {
      this.#state.boundUnknown(await readMaxAllocated(this.#db, this.stream), epoch)
    } catch (err) {
      this.#log.debug({ err }, 'could not read the stream sequence after a failed commit; retried on the next tick')
    }
  }

  async #refreshSequence(): Promise<void> {
    if (this.#closed) return
    try {
      this.#state.observeAllocated(await readMaxAllocated(this.#db, this.stream))
    } catch (err) {
      this.#log.warn({ err }, 'could not read the stream sequence')
    }
  }

  /**
   * Queues an announcement: store the position if it advanced, then publish it if it advanced
   * (or always when `force`, as a re-announcement with prev = next).
   */
  #announce(force: boolean): Promise<void> {
    const run = this.#announceTail.then(() => this.#announceNow(force))
    this.#announceTail = run.catch(() => {})
    return run
  }

  async #announceNow(force: boolean): Promise<void> {
    if (this.#closed && force) return
    const next = this.#state.position
    // With the bus up, readers learn positions from it and read `stream_positions` only to
    // catch up (restart, gap, reconnect), so the row is written after publishing, off the
    // transaction's path (it was a second fsync'd commit per batch). Without the bus, readers
    // poll the table: it is written first.
    const pushed = this.#bus !== undefined && this.#bus.state === 'up'
    if (!pushed) await this.#store(next)
    const prev = this.#announced
    if (next !== prev || force) {
      const rooms = this.#state.takeHint(next)
      this.#announced = next
      if (pushed) {
        try {
          await this.#bus.publish({ type: 'POSITION', stream: this.stream, writer: this.writer, prev, next, rooms })
        } catch (err) {
          this.#log.debug({ err, position: String(next) }, 'could not publish the stream position')
        }
      }
    }
    if (pushed) void this.#storer.run()
  }

  /**
   * Upserts `stream_positions` to `next` (`GREATEST`) unless a higher position is stored.
   *
   * The statement commits asynchronously (`synchronous_commit` off for its own transaction
   * only): it does not wait for its WAL flush, nor hold the WAL write lock that the persist
   * commits queue on. Every row it covers committed durably before it ran, and it is visible
   * at once; what a crash of PostgreSQL can lose is only the latest value of the row. That is
   * the state a writer killed between a commit and its next store leaves too, which
   * `reconcileStream` and the `WriterPosition` it starts from already handle: a lower stored
   * position is conservative, and readers never move back.
   */
  async #store(next: bigint): Promise<void> {
    if (next <= this.#stored) return
    try {
      await sql`WITH async_commit AS (SELECT set_config('synchronous_commit', 'off', true))
        INSERT INTO stream_positions (stream_name, instance_name, stream_id)
        SELECT ${this.stream}::text, ${this.writer}::text, ${next}::bigint FROM async_commit
        ON CONFLICT (stream_name, instance_name)
        DO UPDATE SET stream_id = GREATEST(stream_positions.stream_id, excluded.stream_id)`.execute(this.#db)
      if (next > this.#stored) this.#stored = next
    } catch (err) {
      this.#log.warn({ err, position: String(next) }, 'could not store the stream position')
    }
  }


}

/**
 * False when the failure cannot hide a commit: the database answered it (an error with a
 * SQLSTATE: the statement or transaction rolled back) or Myelin refused before committing.
 */
function mayHaveCommitted(err: unknown): boolean {
  if (err instanceof StorageError) return false
  const code = typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined
  return !(typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code))
}

/**
 * Runs `task` now or, when called while a run is in progress, once more after it (however many
 * calls came meanwhile) as long as `again()` allows. `run()` answers the run in progress.
 *
 * @example
 * const refresher = coalescing(() => readSequence(), () => !closed)
 * void refresher.run(); void refresher.run() // two calls, at most two runs back to back
 * await refresher.current()
 */
function coalescing(task: () => Promise<void>, again: () => boolean = () => true): { run(): Promise<void>; current(): Promise<void> | undefined } {
  let running: Promise<void> | undefined
  let requested = false
  return {
    run() {
      if (running) {
        requested = true
        return running
      }
      running = (async () => {
        do {
          requested = false
          await task()
        } while (requested && again())
      })().finally(() => {
        running = undefined
      })
      return running
    },
    current: () => running,
  }
}
