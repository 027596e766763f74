import type { Kysely, Transaction } from 'kysely'
import type { Registry } from 'prom-client'
import type { JsonObject } from '../storage/events/redaction.js'
import { parseSigningKey } from '../storage/events/signing.js'
import { isStorageError, StorageError } from '../storage/errors.js'
import type { Logger } from '../storage/logger.js'
import type { Database } from '../storage/schema.js'
import type { MultiWriterIdGenerator } from '../storage/streams/id-generator.js'
import { importBatch } from './import-batch.js'
import type { ImportOutcome } from './import-batch.js'
import { validatePersistRequest } from './new-event.js'
import type { PersistedEvent, PersistRequest } from './new-event.js'
import { CommitGroups } from './commit-groups.js'
import { loadRequestAnswers, persistBatches, persistBatchesAtOnce, planOnSnapshot, recordsAnswer, RetryBatchError } from './persist-batch.js'
import type { BatchDeps, BatchResult, RequestOutcome, RoomBatch } from './persist-batch.js'
import { NotOwnerError } from './persist-errors.js'
import { createPersisterMetrics } from './persister-metrics.js'
import type { BatchKind, CommitPath } from './persister-metrics.js'
import { RoomQueue } from './room-queue.js'
import type { RoomSnapshot } from './room-snapshot.js'
import type { ShardMap } from './shard-map.js'

/**
 * The part of `MultiWriterIdGenerator` (storage/streams/id-generator.ts) the persister uses: one
 * Postgres transaction per call, IDs allocated late inside it, finished and published before
 * the call resolves (so answering after it resolves means answering after commit).
 */
export interface StreamTransactions extends Pick<MultiWriterIdGenerator, 'statement'> {
  readonly stream: 'events' | 'backfill'
  readonly writer: string
  transaction<T>(
    fn: (trx: Transaction<Database>, allocate: (n: number, rooms?: readonly string[]) => Promise<bigint[]>) => Promise<T>,
  ): Promise<T>
}

export interface PersisterOptions {
  /** Used only to answer retries of requests for rooms this writer no longer owns. */
  readonly db: Kysely<Database>
  /** The events stream's generator for this writer (positive IDs). */
  readonly events: StreamTransactions
  /** The backfill stream's generator for this writer (negative IDs), for `importEvents`. */
  readonly backfill: StreamTransactions
  readonly shardMap: ShardMap
  /** This writer's name; MUST equal both generators' `writer` and be in `shardMap.writers`. */
  readonly writer: string
  readonly serverName: string
  /** `ed25519 <version> <base64 seed>` (the config's `signing_key`). */
  readonly signingKey: string
  readonly log: Logger
  /** Most events per batch transaction (default 200); a larger single request forms its own batch. */
  readonly maxBatch?: number
  /** Rooms persisted in parallel (default 32). */
  readonly roomConcurrency?: number
  /**
   * Live transactions running at once (default 4; see `parallelTransactionEvents`). Room batches
   * ready while they run wait, and the next transaction takes all of them (group commit,
   * `CommitGroups`); they are planned (built, authorized, signed) while they wait.
   */
  readonly transactionConcurrency?: number
  /** Most events one live transaction takes over all its rooms (default 1,000). */
  readonly maxTransactionEvents?: number
  /**
   * While a live transaction runs, another starts beside it only when at least this many events
   * wait (default 100; 0: whenever a slot is free). Fewer wait for the next transaction, which
   * takes them all: on a busy machine, a transaction's fixed cost (a round trip waking
   * PostgreSQL and then this process, a commit, a WAL flush) is paid in CPU, so small
   * transactions side by side cost more than they overlap. See persisters/README.md.
   */
  readonly parallelTransactionEvents?: number
  /**
   * Gathering under load: after a live transaction of at least `afterEvents` events (default
   * 4), the next one waits up to `ms` (default 4; 0: never) for `events` (default 48). On a
   * saturated machine a transaction's fixed cost is CPU taken from everything else; a light
   * load never waits. A wait that nothing arrived during (a closed loop whose callers all wait
   * in the last transaction) backs off: the next transactions wait only for as many events as
   * the last one had. See persisters/README.md.
   */
  readonly gather?: { readonly ms?: number; readonly events?: number; readonly afterEvents?: number }
  /** Rooms whose snapshot (state, extremities) stays cached between batches (default 10,000). */
  readonly maxCachedRooms?: number
  readonly registry?: Registry
  /** Milliseconds since the epoch; default `Date.now`. */
  readonly clock?: () => number
}

/** The event persister of one writer (ARCHITECTURE §2, steps 4–7). */
export interface Persister {
  readonly writer: string
  /**
   * Persists a request's events in order, in the room's next batch; resolves after commit.
   * A repeated `requestId` gets the first answer (also after a restart, also for rooms since
   * moved to another writer); a repeated client txn gets the original event.
   *
   * @throws NotOwnerError (`ES_NOT_OWNER`, with `owner`) when the shard map gives the room to another writer.
   * @throws RejectedEventError (`ES_FORBIDDEN`, `ES_EVENT_TOO_LARGE`, `ES_BAD_EVENT`, `ES_ROOM_NOT_FOUND`)
   *   for the first refused event; the request's earlier events were stored.
   * @throws StorageError `ES_BAD_EVENT` for a malformed request, `ES_UNAVAILABLE` when closing or
   *   when the database failed (the outcome is then unknown: retry with the same requestId).
   */
  persist(request: PersistRequest): Promise<PersistedEvent[]>
  /**
   * Stores history PDUs built elsewhere with negative stream orderings (see `importBatch`);
   * answers one entry per PDU, in order. Idempotent: PDUs already stored are answered as stored.
   */
  importEvents(roomId: string, pdus: readonly JsonObject[]): Promise<PersistedEvent[]>
  /** Requests waiting in room queues, and rooms with queued or running work. */
  queueDepth(): { readonly requests: number; readonly rooms: number }
  /** Requests waiting in one room's queue. */
  roomQueueDepth(roomId: string): number
  /** Refuses new requests (`ES_UNAVAILABLE`), then resolves once every queued request is answered. */
  close(): Promise<void>
}

type Item =
  | { readonly kind: 'live'; readonly request: PersistRequest; readonly answer: PromiseWithResolvers<PersistedEvent[]> }
  | { readonly kind: 'import'; readonly roomId: string; readonly pdus: readonly JsonObject[]; readonly answer: PromiseWithResolvers<PersistedEvent[]> }

/** Attempts per batch when it must be retried (a room created concurrently, serialization failure, deadlock). */
const maxAttempts = 3
const retryableSqlStates = new Set(['40001', '40P01'])

/**
 * Creates the persister of `options.writer`. Rooms are queued and batched by `RoomQueue`; live
 * batches of different rooms that are ready together share one ID transaction of the events
 * generator (`CommitGroups` + `persistBatches`), an import batch runs `importBatch` in its own
 * transaction of the backfill generator; callers hear back only after their transaction
 * committed and its stream position was published. Per room, the snapshot (state, forward
 * extremities) of the last batch is cached and reused while the head row shows it is current.
 *
 * @throws StorageError `ES_CONFIG_INVALID` for a bad signing key or a writer mismatch.
 * @example
 * const persister = createPersister({ db, events, backfill, shardMap, writer: 'persister1',
 *   serverName: 'example.org', signingKey: config.signing_key, log })
 * const [created] = await persister.persist({ requestId: randomUUID(), roomId, events: [
 *   { type: 'm.room.create', state_key: '', sender: '@alice:example.org', content: { room_version: '11' } },
 * ] })
 * created.stream_ordering // 2n
 */
export function createPersister(options: PersisterOptions): Persister {
  const { writer, shardMap } = options
  const problems: string[] = []
  if (options.events.writer !== writer || options.events.stream !== 'events') problems.push(`events generator must be the events stream of ${writer}`)
  if (options.backfill.writer !== writer || options.backfill.stream !== 'backfill') problems.push(`backfill generator must be the backfill stream of ${writer}`)
  if (!shardMap.writers.includes(writer)) problems.push(`${writer} is not one of the shard map's writers`)
  if (problems.length > 0) throw new StorageError('ES_CONFIG_INVALID', `invalid persister options: ${problems.join('; ')}`)

  const log = options.log.child({ component: 'persister', writer })
  const clock = options.clock ?? Date.now
  const deps: BatchDeps = { writer, serverName: options.serverName, signingKey: parseSigningKey(options.signingKey), clock, log }
  const maxCachedRooms = options.maxCachedRooms ?? 10_000
  const snapshots = new Map<string, RoomSnapshot>()
  const inFlight = new Map<string, Promise<PersistedEvent[]>>()
  let closing = false

  const queue: RoomQueue<Item> = new RoomQueue<Item>({
    roomConcurrency: options.roomConcurrency ?? 32,
    maxBatchWeight: options.maxBatch ?? 200,
    weight: (item) => (item.kind === 'live' ? item.request.events.length : item.pdus.length),
    compatible: (first, next) => first.kind === next.kind,
    run: runBatch,
    onError: (roomId, err) => log.error({ roomId, err }, 'room batch failed outside its transaction'),
  })
  const liveGroups = new CommitGroups<RoomBatch, PromiseSettledResult<BatchResult>>({
    concurrency: options.transactionConcurrency ?? 4,
    maxWeight: options.maxTransactionEvents ?? 1000,
    minParallelWeight: options.parallelTransactionEvents ?? 100,
    gather: { ms: options.gather?.ms ?? 4, weight: options.gather?.events ?? 48, after: options.gather?.afterEvents ?? 4 },
    weight: (batch) => batch.requests.reduce((sum, request) => sum + request.events.length, 0),
    run: runLiveGroup,
  })
  const metrics = createPersisterMetrics({
    ...(options.registry === undefined ? {} : { registry: options.registry }),
    writer,
    queueDepth: () => queue.pendingItems,
    groupsWaiting: () => liveGroups.waiting,
  })

  function cacheSnapshot(roomId: string, snapshot: RoomSnapshot | undefined): void {
    snapshots.delete(roomId)
    if (snapshot === undefined) return
    snapshots.set(roomId, snapshot)
    if (snapshots.size > maxCachedRooms) snapshots.delete(snapshots.keys().next().value as string)
  }

  async function runBatch(roomId: string, batch: Item[]): Promise<void> {
    const kind: BatchKind = batch[0]?.kind === 'import' ? 'import' : 'live'
    const weight = batch.reduce((sum, item) => sum + (item.kind === 'live' ? item.request.events.length : item.pdus.length), 0)
    const started = performance.now()
    try {
      const { outcomes, snapshot, stored } = kind === 'live' ? await runLive(roomId, batch) : await withRetries(roomId, (retry) => runImport(roomId, batch, retry))
      cacheSnapshot(roomId, snapshot)
      metrics.batch(kind, weight, stored, (performance.now() - started) / 1000, true)
      batch.forEach((item, i) => {
        const outcome = outcomes[i] as RequestOutcome | ImportOutcome
        if (outcome.ok) item.answer.resolve(outcome.events)
        else item.answer.reject(outcome.error)
      })
      log.debug({ roomId, kind, requests: batch.length, events: weight, stored }, 'batch persisted')
    } catch (err) {
      cacheSnapshot(roomId, undefined)
      metrics.batch(kind, weight, 0, (performance.now() - started) / 1000, false)
      log.error({ roomId, kind, requests: batch.length, err }, 'batch failed')
      const error = isStorageError(err)
        ? err
        : new StorageError('ES_UNAVAILABLE', `persisting to room ${roomId} failed; retry with the same request ID`, { cause: err })
      for (const item of batch) item.answer.reject(error)
    }
  }

  /** Runs `attempt` again (up to `maxAttempts` in all) while it fails retryably. */
  async function withRetries<T>(roomIds: string | readonly string[], attempt: (retry: boolean) => Promise<T>): Promise<T> {
    for (let n = 1; ; n++) {
      try {
        return await attempt(n > 1)
      } catch (err) {
        if (n >= maxAttempts || !isRetryable(err)) throw err
        log.debug({ roomIds, attempt: n, err }, 'batch retried')
      }
    }
  }

  async function runLive(roomId: string, batch: Item[]): Promise<BatchResult> {
    const requests = batch.flatMap((item) => (item.kind === 'live' ? [item.request] : []))
    const room: RoomBatch = { roomId, requests, cached: snapshots.get(roomId) }
    const settled = await liveGroups.submit({ ...room, planned: planOnSnapshot(deps, room) })
    if (settled.status === 'rejected') throw settled.reason
    return settled.value
  }

  /**
   * One transaction for the batches of several rooms: first, when the group allows it, the
   * one-statement form (`persistBatchesAtOnce`), else a transaction (`persistBatches`). The
   * first attempt assumes no request or client transaction of the group was answered before; a
   * retry looks them up, and drops the cached snapshots (they are reloaded in the transaction).
   * When the group still fails, each room is tried alone, so a room whose batch cannot commit
   * never fails another room's.
   */
  async function runLiveGroup(batches: RoomBatch[]): Promise<PromiseSettledResult<BatchResult>[]> {
    const run = async (group: readonly RoomBatch[]) => {
      let path: CommitPath = 'statement'
      const results = await withRetries(
        group.map((b) => b.roomId),
        async (retry) => {
          const atOnce = retry ? undefined : await persistBatchesAtOnce(options.events, deps, group)
          if (atOnce !== undefined) return atOnce
          path = 'transaction'
          return options.events.transaction((trx, allocate) =>
            persistBatches(trx, allocate, deps, retry ? group.map((b) => ({ ...b, cached: undefined })) : group, { lookUpEarlier: retry }),
          )
        },
      )
      metrics.group(group.length, results.reduce((sum, r) => sum + r.stored, 0), path)
      return results
    }
    try {
      return (await run(batches)).map((value) => ({ status: 'fulfilled', value }))
    } catch (err) {
      if (batches.length === 1) return [{ status: 'rejected', reason: err }]
      log.warn({ rooms: batches.length, err }, 'group transaction failed; retrying its rooms one by one')
      // Planned afresh: the failed attempt may have stored some of the planned events after all.
      return Promise.allSettled(batches.map(async (batch) => ((await run([{ ...batch, planned: planOnSnapshot(deps, batch) }])) as [BatchResult])[0]))
    }
  }

  async function runImport(roomId: string, batch: Item[], retry: boolean) {
    const requests = batch.flatMap((item) => (item.kind === 'import' ? [{ roomId, pdus: item.pdus }] : []))
    return options.backfill.transaction((trx, allocate) =>
      importBatch(trx, allocate, { writer, clock, log }, roomId, requests, retry ? undefined : snapshots.get(roomId)),
    )
  }

  function enqueue(roomId: string, item: Item): Promise<PersistedEvent[]> {
    queue.push(roomId, item)
    return item.answer.promise
  }

  async function persistOrAnswer(request: PersistRequest): Promise<PersistedEvent[]> {
    const owner = shardMap.ownerOf(request.roomId)
    if (owner !== writer) {
      const answered = recordsAnswer(request) ? ((await loadRequestAnswers(options.db, [request.requestId])).get(request.requestId) ?? []) : []
      if (answered.length >= request.events.length) return answered
      throw new NotOwnerError(request.roomId, owner, writer)
    }
    return enqueue(request.roomId, { kind: 'live', request, answer: Promise.withResolvers() })
  }

  return {
    writer,
    async persist(request) {
      if (closing) throw new StorageError('ES_UNAVAILABLE', `persister ${writer} is shutting down`)
      validatePersistRequest(request)
      const running = inFlight.get(request.requestId)
      if (running !== undefined) return running
      const answer = persistOrAnswer(request)
      inFlight.set(request.requestId, answer)
      try {
        return await answer
      } finally {
        inFlight.delete(request.requestId)
      }
    },
    async importEvents(roomId, pdus) {
      if (closing) throw new StorageError('ES_UNAVAILABLE', `persister ${writer} is shutting down`)
      const owner = shardMap.ownerOf(roomId)
      if (owner !== writer) throw new NotOwnerError(roomId, owner, writer)
      return enqueue(roomId, { kind: 'import', roomId, pdus, answer: Promise.withResolvers() })
    },
    queueDepth: () => ({ requests: queue.pendingItems, rooms: queue.activeRooms }),
    roomQueueDepth: (roomId) => queue.pendingFor(roomId),
    async close() {
      closing = true
      await queue.drain()
      log.info('persister closed')
    },
  }
}

function isRetryable(err: unknown): boolean {
  if (err instanceof RetryBatchError) return true
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && retryableSqlStates.has(code)
}
