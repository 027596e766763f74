import { sql } from 'kysely'
import type { Insertable, Kysely, Transaction } from 'kysely'
import {
  advanceRooms,
  appendEventRows,
  insertRoomHead,
  upsertCurrentState,
} from '../storage/events/append-events.js'
import type { EventBatchRows } from '../storage/events/append-events.js'
import type { Extremity } from '../storage/events/event-store.js'
import type { SigningKey } from '../storage/events/signing.js'
import { StorageError } from '../storage/errors.js'
import type { Logger } from '../storage/logger.js'
import type { CurrentStateEventsTable, Database, ReplicationRequestsTable } from '../storage/schema.js'
import { authEventKeys, authorizeEvent, checkEventSize, stateKey } from './auth-rules.js'
import type { AuthEventInput } from './auth-rules.js'
import { buildPdu } from './build-pdu.js'
import type { NewEvent, PersistedEvent, PersistRequest } from './new-event.js'
import { RejectedEventError } from './persist-errors.js'
import { acquireRoom } from './room-snapshot.js'
import type { RoomSnapshot, SnapshotStateEvent } from './room-snapshot.js'

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
 * exist when the batch started and another writer created it meanwhile.
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

/**
 * Persists one batch of requests for one room inside `trx` (ARCHITECTURE §2, step 5). The caller
 * MUST run it inside the events stream's ID transaction, hold no other lock on the room, have
 * checked that the shard map assigns the room to `deps.writer`, and answer callers only after
 * the transaction commits.
 *
 * In order: lock the head row and claim ownership if needed (`acquireRoom`); answer requests
 * already answered (by `replication_requests`, resuming a request after its answered prefix)
 * and duplicate client transactions; for each remaining event, authorize it against the state
 * left by the events before it, link it to the forward extremities, build and size-check the
 * PDU; allocate all stream IDs at once; write every table with one statement each; replace the
 * forward extremities; update current state and the head row.
 *
 * A refused event ends only its own request (`RejectedEventError` naming the event index; the
 * request's earlier events are stored and recorded under its request ID, so a retry resumes
 * after them). Any database error aborts the whole batch.
 *
 * @example
 * const result = await events.transaction((trx, allocate) =>
 *   persistBatch(trx, allocate, deps, roomId, requests, cache.get(roomId)))
 * cache.set(roomId, result.snapshot)
 */
export async function persistBatch(
  trx: Transaction<Database>,
  allocate: (n: number, rooms?: readonly string[]) => Promise<bigint[]>,
  deps: BatchDeps,
  roomId: string,
  requests: readonly PersistRequest[],
  cached: RoomSnapshot | undefined,
): Promise<BatchResult> {
  const { head, snapshot } = await acquireRoom(trx, roomId, deps.writer, cached, deps.log)
  const state = new Map<string, SnapshotStateEvent>(snapshot.state)
  let extremities: Extremity[] = [...snapshot.extremities]
  let maxDepth = snapshot.maxDepth

  const previousAnswers = await loadRequestAnswers(trx, requests.map((r) => r.requestId))
  const storedTxns = await loadTxnEvents(trx, roomId, requests)
  const redactedSenders = await loadRedactedSenders(trx, roomId, requests)

  const accepted: AcceptedEvent[] = []
  const batchTxns = new Map<string, AcceptedEvent>()
  const requestRows: { requestId: string; idx: number; answer: Answer }[] = []
  const answersByRequest: { answers: Answer[]; error?: StorageError }[] = []
  let createEvent: AcceptedEvent | undefined

  for (const request of requests) {
    const answers: Answer[] = (previousAnswers.get(request.requestId) ?? []).map((stored) => ({ stored }))
    const outcome: { answers: Answer[]; error?: StorageError } = { answers }
    answersByRequest.push(outcome)
    for (let index = answers.length; index < request.events.length; index++) {
      const event = request.events[index] as NewEvent
      const txnKey = event.txn === undefined ? undefined : txnKeyOf(event.sender, event.txn)
      const duplicate = txnKey === undefined ? undefined : (batchTxns.get(txnKey) ?? storedTxns.get(txnKey))
      if (duplicate !== undefined) {
        const answer: Answer = 'eventId' in duplicate ? { accepted: duplicate } : { stored: duplicate }
        answers.push(answer)
        requestRows.push({ requestId: request.requestId, idx: index, answer })
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
      requestRows.push({ requestId: request.requestId, idx: index, answer })
    }
  }

  if (head === undefined && createEvent !== undefined) {
    const created = await insertRoomHead(trx, {
      room_id: roomId,
      room_version: String(createEvent.input.content['room_version'] ?? '11'),
      creator: createEvent.input.sender,
      created_ts: createEvent.originServerTs,
      owner: deps.writer,
      epoch: 1n,
    })
    if (!created) throw new RetryBatchError(`room ${roomId} was created concurrently`)
  }

  let lastStreamOrdering = snapshot.lastStreamOrdering
  if (accepted.length > 0) {
    const ids = (await allocate(accepted.length, [roomId])).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
    accepted.forEach((event, i) => {
      event.streamOrdering = ids[i] as bigint
    })
    lastStreamOrdering = ids[ids.length - 1] as bigint
  }
  const persisted = (answer: Answer): PersistedEvent =>
    'stored' in answer
      ? answer.stored
      : { event_id: answer.accepted.eventId, stream_ordering: answer.accepted.streamOrdering as bigint, writer: deps.writer }

  const now = deps.clock()
  await appendEventRows(trx, {
    ...eventRows(roomId, accepted, deps.writer, now),
    replicationRequests: requestAnswerRows(requestRows, persisted, now),
  })
  if (accepted.length > 0) {
    await upsertCurrentState(trx, currentStateRows(roomId, accepted))
    await advanceRooms(trx, [{ roomId, extremities: extremities.map((x) => x.eventId), maxDepth, lastStreamOrdering: lastStreamOrdering as bigint }])
  }

  return {
    outcomes: answersByRequest.map(({ answers, error }) =>
      error === undefined ? { ok: true, events: answers.map(persisted) } : { ok: false, error },
    ),
    snapshot: {
      epoch: head?.epoch ?? 1n,
      lastStreamOrdering,
      state,
      extremities: sortExtremities(extremities),
      maxDepth,
    },
    stored: accepted.length,
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

function eventRows(roomId: string, accepted: readonly AcceptedEvent[], writer: string, now: number): Omit<EventBatchRows, 'replicationRequests'> {
  const rows = {
    events: [] as Mutable<EventBatchRows['events']>,
    eventJson: [] as Mutable<EventBatchRows['eventJson']>,
    edges: [] as Mutable<EventBatchRows['edges']>,
    stateEvents: [] as Mutable<EventBatchRows['stateEvents']>,
    redactions: [] as Mutable<EventBatchRows['redactions']>,
    memberships: [] as Mutable<EventBatchRows['memberships']>,
    txnIds: [] as Mutable<EventBatchRows['txnIds']>,
  }
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
  return rows
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
    SELECT r.request_id, r.first_idx + a.ord::int - 1 AS idx, e.event_id, e.stream_ordering, e.instance_name
    FROM replication_requests r
    CROSS JOIN LATERAL unnest(r.event_ids) WITH ORDINALITY AS a(event_id, ord)
    JOIN events e ON e.event_id = a.event_id
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
      byRequest.set(row.requestId, { request_id: row.requestId, first_idx: row.idx, event_ids: [persisted(row.answer).event_id], inserted_ts: now })
    } else {
      entry.event_ids.push(persisted(row.answer).event_id)
    }
  }
  return [...byRequest.values()]
}

/** Stored events of the batch's client transactions, keyed by `txnKeyOf`. */
async function loadTxnEvents(trx: Transaction<Database>, roomId: string, requests: readonly PersistRequest[]): Promise<Map<string, PersistedEvent>> {
  const found = new Map<string, PersistedEvent>()
  const keys = requests.flatMap((r) => r.events.flatMap((e) => (e.txn === undefined ? [] : [{ user: e.sender, ...e.txn }])))
  if (keys.length === 0) return found
  const { rows } = await sql<{ user_id: string; device_id: string; txn_id: string; event_id: string; stream_ordering: bigint; instance_name: string }>`
    SELECT t.user_id, t.device_id, t.txn_id, e.event_id, e.stream_ordering, e.instance_name
    FROM unnest(${keys.map((k) => k.user)}::text[], ${keys.map((k) => k.deviceId)}::text[], ${keys.map((k) => k.txnId)}::text[]) AS k(user_id, device_id, txn_id)
    JOIN event_txn_ids t ON t.room_id = ${roomId} AND t.user_id = k.user_id AND t.device_id = k.device_id AND t.txn_id = k.txn_id
    JOIN events e ON e.event_id = t.event_id`.execute(trx)
  for (const row of rows) {
    found.set(txnKeyOf(row.user_id, { deviceId: row.device_id, txnId: row.txn_id }), {
      event_id: row.event_id,
      stream_ordering: row.stream_ordering,
      writer: row.instance_name,
    })
  }
  return found
}

/** Senders of the stored events the batch's redactions target (same room only). */
async function loadRedactedSenders(trx: Transaction<Database>, roomId: string, requests: readonly PersistRequest[]): Promise<Map<string, string>> {
  const targets = new Set<string>()
  for (const request of requests) {
    for (const event of request.events) {
      if (event.type !== 'm.room.redaction') continue
      const target = event.redacts ?? stringOrUndefined(event.content['redacts'])
      if (target !== undefined) targets.add(target)
    }
  }
  const senders = new Map<string, string>()
  if (targets.size === 0) return senders
  const { rows } = await sql<{ event_id: string; sender: string }>`
    SELECT event_id, sender FROM events WHERE room_id = ${roomId} AND event_id = ANY(${[...targets]}::text[])`.execute(trx)
  for (const row of rows) senders.set(row.event_id, row.sender)
  return senders
}

function sortExtremities(extremities: readonly Extremity[]): Extremity[] {
  return [...extremities].sort((a, b) => (a.depth !== b.depth ? (a.depth > b.depth ? -1 : 1) : a.eventId < b.eventId ? -1 : 1))
}

function txnKeyOf(sender: string, txn: { readonly deviceId: string; readonly txnId: string }): string {
  return `${sender}\u0000${txn.deviceId}\u0000${txn.txnId}`
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

type Mutable<T> = T extends readonly (infer U)[] ? U[] : never
