import { sql } from 'kysely'
import type { Insertable, Kysely, Transaction } from 'kysely'
import { emptyBatchRows, insertRoomHead, writeBatch, writeBatchGuarded } from '../storage/events/append-events.js'
import type { BatchWrite, MutableBatchRows } from '../storage/events/append-events.js'
import type { Extremity } from '../storage/events/event-store.js'
import type { SigningKey } from '../storage/events/signing.js'
import { StorageError } from '../storage/errors.js'
import type { Logger } from '../storage/logger.js'
import { relationOf, relationRow } from '../storage/relations.js'
import type { CurrentStateEventsTable, Database, ReplicationRequestsTable } from '../storage/schema.js'
import type { MultiWriterIdGenerator } from '../storage/streams/id-generator.js'
import { streamHint } from '../storage/streams/writer-position.js'
import { authEventKeys, authorizeEvent, checkEventSize, stateKey } from './auth-rules.js'
import type { AuthEventInput } from './auth-rules.js'
import { buildPdu } from './build-pdu.js'
import type { NewEvent, PersistedEvent, PersistRequest } from './new-event.js'
import { RejectedEventError } from './persist-errors.js'
import { acquireRooms } from './room-snapshot.js'
import type { AcquiredRoom, RoomSnapshot, SnapshotStateEvent } from './room-snapshot.js'

/** Most prev_events a new event takes (Synapse takes up to 10 forward extremities, deepest first). */
export const maxPrevEvents = 10

/** What a batch needs besides the transaction. */
export interface BatchDeps {
  readonly writer: string
  readonly serverName: string
  readonly signingKey: SigningKey
  readonly clock: () => number
  readonly log: Logger
}

/** Per request: its answers, or the error that ended it. */
export type RequestOutcome = { readonly ok: true; readonly events: PersistedEvent[] } | { readonly ok: false; readonly error: StorageError }

export interface BatchResult {
  /** One per request, in request order. */
  readonly outcomes: RequestOutcome[]
  /** The room after the batch; cache it only once the transaction has committed. */
  readonly snapshot: RoomSnapshot
  /** New events stored by the batch (duplicates answered from earlier events not counted). */
  readonly stored: number
}

/**
 * Thrown inside the transaction when the batch must be retried from scratch: the room did not
 * exist when the batch started and another writer created it meanwhile, or the batch assumed
 * no earlier answers and met one (see `persistBatches`).
 */
export class RetryBatchError extends Error {
  override readonly name = 'RetryBatchError'
}

/** A new event accepted into the batch; `streamOrdering` is set once IDs are allocated. */
interface AcceptedEvent {
  readonly eventId: string
  readonly json: string
  readonly input: AuthEventInput
  readonly depth: number
  readonly originServerTs: number
  readonly prevEvents: readonly string[]
  readonly redacts: string | undefined
  readonly prevStateEventId: string | null
  readonly txn: NewEvent['txn']
  streamOrdering?: bigint
}

type Answer = { readonly stored: PersistedEvent } | { readonly accepted: AcceptedEvent }

/** One room's batch: its requests in order, and its snapshot cached from the last commit. */
export interface RoomBatch {
  readonly roomId: string
  readonly requests: readonly PersistRequest[]
  readonly cached: RoomSnapshot | undefined
  /**
   * The batch planned on `cached` (`planOnSnapshot`) when it was submitted, so that its CPU work
   * (authorization, linking, hashing, signing) overlaps the statement in flight instead of
   * waiting for a transaction slot; undefined when it needs the database to be planned.
   * `persistBatchesAtOnce` writes these plans; `persistBatches` ignores them.
   */
  readonly planned?: RoomPlan | undefined
}

/**
 * Persists the batches of several rooms (each room at most once) in one transaction, `trx`
 * (ARCHITECTURE §2, step 5), with one statement per step for all of them, so a group of rooms
 * costs one commit and five round trips (begin, lock, allocate, write, commit), not that many
 * per room. The caller MUST run it inside the events stream's ID transaction, hold no other
 * lock on these rooms, have checked that the shard map assigns every room to `deps.writer`, and
 * answer callers only after the transaction commits.
 *
 * In order: lock the head rows and claim ownership where needed (`acquireRooms`); answer
 * requests already answered (by `replication_requests`, resuming a request after its answered
 * prefix) and duplicate client transactions; for each remaining event, authorize it against the
 * state left by the events before it in its room, link it to the room's forward extremities,
 * build and size-check the PDU; allocate all stream IDs at once; write every table with one
 * statement (rows, current state, forward extremities and head rows: `writeBatch`).
 *
 * A refused event ends only its own request (`RejectedEventError` naming the event index; the
 * request's earlier events are stored and recorded under its request ID, so a retry resumes
 * after them). Any database error aborts the whole transaction, every room's batch with it.
 *
 * Earlier answers (a request ID answered before, a client transaction stored before) are looked
 * up first when `lookUpEarlier` is set. Without it, the batch assumes there are none, which is
 * the case for all but retries, and saves two queries per transaction: if one exists after all,
 * the unique key of `replication_requests` or `event_txn_ids` refuses the insert and the batch
 * throws `RetryBatchError`, to be retried with `lookUpEarlier`.
 *
 * @returns one result per batch, in batch order.
 * @example
 * const results = await events.transaction((trx, allocate) =>
 *   persistBatches(trx, allocate, deps, [{ roomId, requests, cached: cache.get(roomId) }], { lookUpEarlier: false }))
 */
export async function persistBatches(
  trx: Transaction<Database>,
  allocate: (n: number, rooms?: readonly string[]) => Promise<bigint[]>,
  deps: BatchDeps,
  batches: readonly RoomBatch[],
  options: { readonly lookUpEarlier: boolean },
): Promise<BatchResult[]> {
  if (new Set(batches.map((b) => b.roomId)).size !== batches.length) throw new Error('persistBatches: a room appears twice in one group')
  const acquired = await acquireRooms(trx, batches, deps.writer, deps.log)
  const previousAnswers = options.lookUpEarlier
    ? await loadRequestAnswers(trx, batches.flatMap((b) => b.requests.filter(recordsAnswer).map((r) => r.requestId)))
    : new Map<string, PersistedEvent[]>()
  const storedTxns = options.lookUpEarlier ? await loadTxnEvents(trx, batches) : new Map<string, PersistedEvent>()
  const redactedSenders = await loadRedactedSenders(trx, batches)
  const plans = batches.map((batch, i) =>
    planRoom(deps, batch, acquired[i] as AcquiredRoom, previousAnswers, storedTxns, redactedSenders.get(batch.roomId) ?? new Map()),
  )

  for (const plan of plans) {
    if (!plan.roomIsNew || plan.createEvent === undefined) continue
    const created = await insertRoomHead(trx, {
      room_id: plan.roomId,
      room_version: String(plan.createEvent.input.content['room_version'] ?? '11'),
      creator: plan.createEvent.input.sender,
      created_ts: plan.createEvent.originServerTs,
      owner: deps.writer,
      epoch: 1n,
    })
    if (!created) throw new RetryBatchError(`room ${plan.roomId} was created concurrently`)
  }

  const accepted = plans.flatMap((plan) => plan.accepted)
  if (accepted.length > 0) {
    // Sorted IDs dealt out in plan order: each room's events get increasing stream orderings.
    const ids = (await allocate(accepted.length, hintOf(plans))).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
    accepted.forEach((event, i) => {
      event.streamOrdering = ids[i] as bigint
    })
  }
  const write = batchWrite(plans, deps)
  try {
    await writeBatch(trx, write)
  } catch (err) {
    throw options.lookUpEarlier ? err : answeredBefore(err)
  }
  return batchResults(plans, deps)
}

/**
 * The optimistic form of `persistBatches`: when every room of the group has a cached snapshot
 * and no event needs the database to be planned (no redaction, no refusal, no new room), the
 * batches' plans (`RoomBatch.planned`, made in memory by `planOnSnapshot`) are written by ONE
 * statement outside a transaction block
 * (`writeBatchGuarded` through `events.statement`): it locks the head rows, checks they still
 * are what the snapshots say (owner, epoch, last stream ordering), allocates the stream IDs
 * and writes everything, or writes nothing when a head moved on. One round trip instead of
 * five.
 *
 * @returns the results, or `undefined` when the group must take the transactional path
 * (not eligible, or a head moved on; nothing was written).
 * @throws RetryBatchError when an earlier answer exists after all (retry with lookups).
 */
export async function persistBatchesAtOnce(
  events: Pick<MultiWriterIdGenerator, 'statement'>,
  deps: BatchDeps,
  batches: readonly RoomBatch[],
): Promise<BatchResult[] | undefined> {
  const plans: RoomPlan[] = []
  for (const batch of batches) {
    if (batch.planned === undefined) return undefined
    plans.push(batch.planned)
  }
  const accepted = plans.flatMap((plan) => plan.accepted)
  // Until the statement answers, stream orderings are 1-based indexes into its allocation.
  accepted.forEach((event, i) => {
    event.streamOrdering = BigInt(i + 1)
  })
  const write = batchWrite(plans, deps)
  const outcome = await events.statement(hintOf(plans), async (db, sequence) => {
    let answer
    try {
      answer = await writeBatchGuarded(db, write, {
        writer: deps.writer,
        heads: plans.map(({ roomId, snapshot }) => ({ roomId, epoch: snapshot.epoch, lastStreamOrdering: snapshot.lastStreamOrdering })),
        count: accepted.length,
        sequence,
      })
    } catch (err) {
      throw answeredBefore(err)
    }
    return { ids: answer.ids, result: answer }
  })
  if (!outcome.ok) return undefined
  accepted.forEach((event, i) => {
    event.streamOrdering = outcome.ids[i] as bigint
  })
  return batchResults(plans, deps)
}

/**
 * Plans `batch` in memory on its cached snapshot for `persistBatchesAtOnce`: every event built,
 * authorized, linked and signed. Undefined when the batch needs the database to be planned: no
 * cached snapshot, a redaction, a refused event or a new room.
 */
export function planOnSnapshot(deps: BatchDeps, batch: RoomBatch): RoomPlan | undefined {
  const snapshot = batch.cached
  if (snapshot === undefined) return undefined
  if (batch.requests.some((request) => request.events.some((event) => event.type === 'm.room.redaction'))) return undefined
  const plan = planRoom(deps, batch, { head: { epoch: snapshot.epoch }, snapshot }, noAnswers, noAnswers, new Map())
  if (plan.createEvent !== undefined || plan.answersByRequest.some((answer) => answer.error !== undefined)) return undefined
  return plan
}

const noAnswers: ReadonlyMap<string, never> = new Map<string, never>()

/** The stream position's hint of the plans: the rooms they add events to, and whose membership they change. */
function hintOf(plans: readonly RoomPlan[]): string[] {
  const withEvents = plans.filter((plan) => plan.accepted.length > 0)
  const members = withEvents.flatMap((plan) => plan.accepted.flatMap(({ input }) => (input.type === 'm.room.member' && input.state_key !== undefined ? [input.state_key] : [])))
  return streamHint(
    withEvents.map((plan) => plan.roomId),
    members,
  )
}

/** Whether the request's answer is stored for its retries (see `PersistRequest.recordAnswer`). */
export function recordsAnswer(request: PersistRequest): boolean {
  return request.recordAnswer !== false
}

/** A unique-key refusal of an earlier answer (see `persistBatches`) as `RetryBatchError`; any other error as is. */
function answeredBefore(err: unknown): unknown {
  const { code, constraint } = err as { code?: unknown; constraint?: unknown }
  if (code === '23505' && (constraint === 'replication_requests_pkey' || constraint === 'event_txn_ids_pkey')) {
    return new RetryBatchError(`a request or client transaction of the batch was answered before (${constraint})`, { cause: err })
  }
  return err
}

function persistedAnswer(deps: BatchDeps): (answer: Answer) => PersistedEvent {
  return (answer) =>
    'stored' in answer
      ? answer.stored
      : { event_id: answer.accepted.eventId, stream_ordering: answer.accepted.streamOrdering as bigint, writer: deps.writer }
}

/** Everything the plans write, their events' stream orderings set. */
function batchWrite(plans: readonly RoomPlan[], deps: BatchDeps): BatchWrite {
  const now = deps.clock()
  const rows = emptyBatchRows()
  for (const plan of plans) addEventRows(rows, plan.roomId, plan.accepted, deps.writer, now)
  rows.replicationRequests.push(...requestAnswerRows(plans.flatMap((plan) => plan.requestRows), persistedAnswer(deps), now))
  const advanced = plans.filter((plan) => plan.accepted.length > 0)
  return {
    rows,
    currentState: advanced.flatMap((plan) => currentStateRows(plan.roomId, plan.accepted)),
    advances: advanced.map((plan) => ({
      roomId: plan.roomId,
      extremities: plan.extremities.map((x) => x.eventId),
      maxDepth: plan.maxDepth,
      lastStreamOrdering: (plan.accepted.at(-1) as AcceptedEvent).streamOrdering as bigint,
    })),
  }
}

function batchResults(plans: readonly RoomPlan[], deps: BatchDeps): BatchResult[] {
  const persisted = persistedAnswer(deps)
  return plans.map((plan) => {
    const lastStreamOrdering = plan.accepted.at(-1)?.streamOrdering ?? plan.snapshot.lastStreamOrdering
    return {
      outcomes: plan.answersByRequest.map(({ answers, error }) =>
        error === undefined ? { ok: true, events: answers.map(persisted) } : { ok: false, error },
      ),
      snapshot: {
        epoch: plan.epoch,
        lastStreamOrdering,
        state: plan.state,
        extremities: sortExtremities(plan.extremities),
        maxDepth: plan.maxDepth,
      },
      stored: plan.accepted.length,
    }
  })
}

/** What one room's batch will write, worked out in memory before any write. */
export interface RoomPlan {
  readonly roomId: string
  /** The room has no head row yet (its batch must start with m.room.create). */
  readonly roomIsNew: boolean
  /** The ownership epoch the batch commits under. */
  readonly epoch: bigint
  readonly snapshot: RoomSnapshot
  readonly state: Map<string, SnapshotStateEvent>
  readonly extremities: Extremity[]
  readonly maxDepth: bigint
  readonly accepted: AcceptedEvent[]
  readonly createEvent: AcceptedEvent | undefined
  readonly requestRows: { requestId: string; idx: number; answer: Answer }[]
  readonly answersByRequest: { answers: Answer[]; error?: StorageError }[]
}

/** Answers, authorizes, links and builds a room's requests in order against its running state. */
function planRoom(
  deps: BatchDeps,
  batch: RoomBatch,
  { head, snapshot }: { readonly head: { readonly epoch: bigint } | undefined; readonly snapshot: RoomSnapshot },
  previousAnswers: ReadonlyMap<string, PersistedEvent[]>,
  storedTxns: ReadonlyMap<string, PersistedEvent>,
  redactedSenders: Map<string, string>,
): RoomPlan {
  const { roomId } = batch
  const state = new Map<string, SnapshotStateEvent>(snapshot.state)
  let extremities: Extremity[] = [...snapshot.extremities]
  let maxDepth = snapshot.maxDepth
  const accepted: AcceptedEvent[] = []
  const batchTxns = new Map<string, AcceptedEvent>()
  const requestRows: { requestId: string; idx: number; answer: Answer }[] = []
  const answersByRequest: { answers: Answer[]; error?: StorageError }[] = []
  let createEvent: AcceptedEvent | undefined

  for (const request of batch.requests) {
    const answers: Answer[] = (previousAnswers.get(request.requestId) ?? []).map((stored) => ({ stored }))
    const outcome: { answers: Answer[]; error?: StorageError } = { answers }
    answersByRequest.push(outcome)
    const record = (idx: number, answer: Answer) => {
      if (recordsAnswer(request)) requestRows.push({ requestId: request.requestId, idx, answer })
    }
    for (let index = answers.length; index < request.events.length; index++) {
      const event = request.events[index] as NewEvent
      const txnKey = event.txn === undefined ? undefined : txnKeyOf(roomId, event.sender, event.txn)
      const duplicate = txnKey === undefined ? undefined : (batchTxns.get(txnKey) ?? storedTxns.get(txnKey))
      if (duplicate !== undefined) {
        const answer: Answer = 'eventId' in duplicate ? { accepted: duplicate } : { stored: duplicate }
        answers.push(answer)
        record(index, answer)
        continue
      }
      const built = buildEvent(deps, roomId, event, index, head === undefined, state, extremities, redactedSenders)
      if (built instanceof RejectedEventError) {
        outcome.error = built
        deps.log.info({ roomId, code: built.code, eventIndex: index, reason: built.reason }, 'event rejected')
        break
      }
      accepted.push(built)
      if (txnKey !== undefined) batchTxns.set(txnKey, built)
      redactedSenders.set(built.eventId, built.input.sender)
      if (built.input.type === 'm.room.create') createEvent = built
      if (built.input.state_key !== undefined) {
        state.set(stateKey(built.input.type, built.input.state_key), {
          type: built.input.type,
          state_key: built.input.state_key,
          sender: built.input.sender,
          content: built.input.content,
          event_id: built.eventId,
        })
      }
      const depth = BigInt(built.depth)
      extremities = [{ eventId: built.eventId, depth }, ...extremities.filter((x) => !built.prevEvents.includes(x.eventId))]
      if (depth > maxDepth) maxDepth = depth
      const answer: Answer = { accepted: built }
      answers.push(answer)
      record(index, answer)
    }
  }
  return {
    roomId,
    roomIsNew: head === undefined,
    epoch: head?.epoch ?? 1n,
    snapshot,
    state,
    extremities,
    maxDepth,
    accepted,
    createEvent,
    requestRows,
    answersByRequest,
  }
}

/** Authorizes, links and builds one event against the batch's running state, or says why not. */
function buildEvent(
  deps: BatchDeps,
  roomId: string,
  event: NewEvent,
  index: number,
  roomIsNew: boolean,
  state: ReadonlyMap<string, SnapshotStateEvent>,
  extremities: readonly Extremity[],
  redactedSenders: ReadonlyMap<string, string>,
): AcceptedEvent | RejectedEventError {
  if (roomIsNew && state.size === 0 && event.type !== 'm.room.create') {
    return new RejectedEventError('ES_ROOM_NOT_FOUND', index, `room ${roomId} does not exist`)
  }
  if (domainOf(event.sender) !== deps.serverName) {
    return new RejectedEventError('ES_FORBIDDEN', index, `sender ${event.sender} is not a user of ${deps.serverName}`)
  }
  const redacts = event.type === 'm.room.redaction' ? (event.redacts ?? stringOrUndefined(event.content['redacts'])) : undefined
  const content = redacts !== undefined && event.content['redacts'] === undefined ? { ...event.content, redacts } : event.content
  const originServerTs = event.origin_server_ts ?? deps.clock()
  const input: AuthEventInput = {
    type: event.type,
    sender: event.sender,
    content,
    room_id: roomId,
    origin_server_ts: originServerTs,
    ...(event.state_key === undefined ? {} : { state_key: event.state_key }),
  }
  const context = redacts === undefined ? {} : withSender(redactedSenders.get(redacts))
  const auth = authorizeEvent(input, state, context)
  if (!auth.ok) return new RejectedEventError('ES_FORBIDDEN', index, auth.reason)

  const prevs = sortExtremities(extremities).slice(0, maxPrevEvents)
  const depth = prevs.reduce((max, x) => (x.depth > max ? x.depth : max), 0n) + 1n
  const authEvents = authEventKeys(input)
    .map((key) => state.get(stateKey(key.type, key.state_key))?.event_id)
    .filter((id): id is string => id !== undefined)
  let built
  try {
    built = buildPdu(
      {
        roomId,
        type: event.type,
        ...(event.state_key === undefined ? {} : { stateKey: event.state_key }),
        sender: event.sender,
        content,
        originServerTs,
        prevEvents: prevs.map((x) => x.eventId),
        authEvents,
        depth: Number(depth),
      },
      deps.serverName,
      deps.signingKey,
    )
  } catch (err) {
    if (err instanceof StorageError) return new RejectedEventError('ES_BAD_EVENT', index, err.message)
    throw err
  }
  const size = checkEventSize(built.pdu, built.json)
  if (!size.ok) return new RejectedEventError('ES_EVENT_TOO_LARGE', index, size.reason)
  return {
    eventId: built.eventId,
    json: built.json,
    input,
    depth: Number(depth),
    originServerTs,
    prevEvents: prevs.map((x) => x.eventId),
    redacts,
    prevStateEventId: event.state_key === undefined ? null : (state.get(stateKey(event.type, event.state_key))?.event_id ?? null),
    txn: event.txn,
  }
}

/** Appends the rows of a room's accepted events to `rows`. */
function addEventRows(rows: MutableBatchRows, roomId: string, accepted: readonly AcceptedEvent[], writer: string, now: number): void {
  for (const event of accepted) {
    const { input } = event
    const streamOrdering = event.streamOrdering as bigint
    const membership = membershipOf(input)
    rows.events.push({
      stream_ordering: streamOrdering,
      event_id: event.eventId,
      room_id: roomId,
      type: input.type,
      state_key: input.state_key ?? null,
      sender: input.sender,
      origin_server_ts: event.originServerTs,
      received_ts: now,
      depth: event.depth,
      instance_name: writer,
      redacts: event.redacts ?? null,
      membership,
    })
    rows.eventJson.push({ event_id: event.eventId, room_id: roomId, json: event.json })
    for (const prev of event.prevEvents) rows.edges.push({ event_id: event.eventId, prev_event_id: prev, room_id: roomId })
    if (input.state_key !== undefined) {
      rows.stateEvents.push({
        event_id: event.eventId,
        room_id: roomId,
        type: input.type,
        state_key: input.state_key,
        prev_state_event_id: event.prevStateEventId,
      })
    }
    if (event.redacts !== undefined) rows.redactions.push({ event_id: event.eventId, redacts: event.redacts })
    const relation = relationOf(input.content, input.state_key)
    if (relation) rows.relations.push(relationRow({ eventId: event.eventId, roomId, sender: input.sender, type: input.type, streamOrdering }, relation))
    if (membership !== null && input.state_key !== undefined) {
      rows.memberships.push({
        event_id: event.eventId,
        room_id: roomId,
        user_id: input.state_key,
        sender: input.sender,
        membership,
        stream_ordering: streamOrdering,
        depth: event.depth,
      })
    }
    if (event.txn !== undefined) {
      rows.txnIds.push({
        room_id: roomId,
        user_id: input.sender,
        device_id: event.txn.deviceId,
        txn_id: event.txn.txnId,
        event_id: event.eventId,
        inserted_ts: now,
      })
    }
  }
}

/** The last event per state key of the batch (an upsert must not touch a row twice). */
function currentStateRows(roomId: string, accepted: readonly AcceptedEvent[]): Insertable<CurrentStateEventsTable>[] {
  const latest = new Map<string, Insertable<CurrentStateEventsTable>>()
  for (const event of accepted) {
    const { input } = event
    if (input.state_key === undefined) continue
    latest.set(stateKey(input.type, input.state_key), {
      room_id: roomId,
      type: input.type,
      state_key: input.state_key,
      event_id: event.eventId,
      membership: membershipOf(input),
      stream_ordering: event.streamOrdering as bigint,
    })
  }
  return [...latest.values()]
}

/**
 * Answers already given to these request IDs, as contiguous prefixes (idx 0, 1, …); IDs never
 * answered are absent.
 *
 * @example
 * (await loadRequestAnswers(db, ['req-1'])).get('req-1') // [{ event_id: '$a', stream_ordering: 5n, writer: 'persister1' }]
 */
export async function loadRequestAnswers(db: Kysely<Database>, requestIds: readonly string[]): Promise<Map<string, PersistedEvent[]>> {
  const answers = new Map<string, PersistedEvent[]>()
  if (requestIds.length === 0) return answers
  const { rows } = await sql<{ request_id: string; idx: number; event_id: string; stream_ordering: bigint; instance_name: string }>`
    SELECT r.request_id, r.first_idx + a.ord::int - 1 AS idx, a.event_id, e.stream_ordering, e.instance_name
    FROM replication_requests r
    CROSS JOIN LATERAL unnest(r.event_ids) WITH ORDINALITY AS a(event_id, ord)
    CROSS JOIN LATERAL (SELECT stream_ordering, instance_name FROM events WHERE event_id = a.event_id LIMIT 1) e
    WHERE r.request_id = ANY(${[...new Set(requestIds)]}::text[])
    ORDER BY r.request_id, idx`.execute(db)
  for (const row of rows) {
    const list = answers.get(row.request_id) ?? []
    if (row.idx !== list.length) continue
    list.push({ event_id: row.event_id, stream_ordering: row.stream_ordering, writer: row.instance_name })
    answers.set(row.request_id, list)
  }
  return answers
}

/** One `replication_requests` row per request: the events the batch answered it with, from its first new index. */
function requestAnswerRows(
  rows: readonly { requestId: string; idx: number; answer: Answer }[],
  persisted: (answer: Answer) => PersistedEvent,
  now: number,
): Insertable<ReplicationRequestsTable>[] {
  const byRequest = new Map<string, Insertable<ReplicationRequestsTable> & { event_ids: string[] }>()
  for (const row of rows) {
    const entry = byRequest.get(row.requestId)
    if (entry === undefined) {
      const eventIds = [persisted(row.answer).event_id]
      byRequest.set(row.requestId, { request_id: row.requestId, first_idx: row.idx, event_ids: eventIds, inserted_ts: now })
    } else {
      entry.event_ids.push(persisted(row.answer).event_id)
    }
  }
  return [...byRequest.values()]
}

// The lookups below join arrays of keys to tables through LATERAL subqueries with LIMIT 1 (each
// key matches at most one row): the planner cannot turn them into a hash join over the whole
// table, which a prepared statement's generic plan would otherwise pick (it cannot see the
// array's size).

/** Stored events of the batches' client transactions, keyed by `txnKeyOf`. */
async function loadTxnEvents(trx: Transaction<Database>, batches: readonly RoomBatch[]): Promise<Map<string, PersistedEvent>> {
  const found = new Map<string, PersistedEvent>()
  const keys = batches.flatMap((b) =>
    b.requests.flatMap((r) => r.events.flatMap((e) => (e.txn === undefined ? [] : [{ room: b.roomId, user: e.sender, ...e.txn }]))),
  )
  if (keys.length === 0) return found
  const { rows } = await sql<{ room_id: string; user_id: string; device_id: string; txn_id: string; event_id: string; stream_ordering: bigint; instance_name: string }>`
    SELECT k.room_id, k.user_id, k.device_id, k.txn_id, t.event_id, t.stream_ordering, t.instance_name
    FROM unnest(${keys.map((k) => k.room)}::text[], ${keys.map((k) => k.user)}::text[], ${keys.map((k) => k.deviceId)}::text[],
                ${keys.map((k) => k.txnId)}::text[]) AS k(room_id, user_id, device_id, txn_id)
    CROSS JOIN LATERAL (
      SELECT e.event_id, e.stream_ordering, e.instance_name FROM event_txn_ids t JOIN events e ON e.event_id = t.event_id
      WHERE t.room_id = k.room_id AND t.user_id = k.user_id AND t.device_id = k.device_id AND t.txn_id = k.txn_id
      LIMIT 1
    ) t`.execute(trx)
  for (const row of rows) {
    found.set(txnKeyOf(row.room_id, row.user_id, { deviceId: row.device_id, txnId: row.txn_id }), {
      event_id: row.event_id,
      stream_ordering: row.stream_ordering,
      writer: row.instance_name,
    })
  }
  return found
}

/** Per room, the senders of the stored events its batch's redactions target (in that room only). */
async function loadRedactedSenders(trx: Transaction<Database>, batches: readonly RoomBatch[]): Promise<Map<string, Map<string, string>>> {
  const rooms: string[] = []
  const targets: string[] = []
  for (const batch of batches) {
    for (const request of batch.requests) {
      for (const event of request.events) {
        if (event.type !== 'm.room.redaction') continue
        const target = event.redacts ?? stringOrUndefined(event.content['redacts'])
        if (target === undefined) continue
        rooms.push(batch.roomId)
        targets.push(target)
      }
    }
  }
  const senders = new Map<string, Map<string, string>>()
  if (targets.length === 0) return senders
  const { rows } = await sql<{ room_id: string; event_id: string; sender: string }>`
    SELECT t.room_id, t.event_id, e.sender
    FROM unnest(${rooms}::text[], ${targets}::text[]) AS t(room_id, event_id)
    CROSS JOIN LATERAL (SELECT sender FROM events WHERE event_id = t.event_id AND room_id = t.room_id LIMIT 1) e`.execute(trx)
  for (const row of rows) {
    const room = senders.get(row.room_id) ?? new Map<string, string>()
    room.set(row.event_id, row.sender)
    senders.set(row.room_id, room)
  }
  return senders
}

function sortExtremities(extremities: readonly Extremity[]): Extremity[] {
  return [...extremities].sort((a, b) => (a.depth !== b.depth ? (a.depth > b.depth ? -1 : 1) : a.eventId < b.eventId ? -1 : 1))
}

function txnKeyOf(roomId: string, sender: string, txn: { readonly deviceId: string; readonly txnId: string }): string {
  return `${roomId}\u0000${sender}\u0000${txn.deviceId}\u0000${txn.txnId}`
}

function membershipOf(input: AuthEventInput): string | null {
  return input.type === 'm.room.member' ? (stringOrUndefined(input.content['membership']) ?? null) : null
}

function withSender(sender: string | undefined): { redactedEventSender?: string } {
  return sender === undefined ? {} : { redactedEventSender: sender }
}

function stringOrUndefined(value: unknown): string | undefined {
  return typeof value === 'string' ? value : undefined
}

function domainOf(userId: string): string | undefined {
  const colon = userId.indexOf(':')
  return colon < 0 ? undefined : userId.slice(colon + 1)
}

