import type { Transaction } from 'kysely'
import { appendEventRows, emptyBatchRows, updateBackwardExtremities } from '../storage/events/append-events.js'
import { relationOf, relationRow } from '../storage/relations.js'
import type { EventBatchRows } from '../storage/events/append-events.js'
import { encodeCanonicalJson } from '../storage/events/canonical-json.js'
import { computeContentHash, computeEventId } from '../storage/events/event-hashes.js'
import type { JsonObject } from '../storage/events/redaction.js'
import { StorageError } from '../storage/errors.js'
import type { Logger } from '../storage/logger.js'
import type { Database } from '../storage/schema.js'
import { checkEventSize } from './auth-rules.js'
import type { PersistedEvent } from './new-event.js'
import { RejectedEventError } from './persist-errors.js'
import { acquireRoom } from './room-snapshot.js'
import type { RoomSnapshot } from './room-snapshot.js'

/** Most PDUs in one import request (Synapse sends federation batches of at most 200). */
export const maxPdusPerImport = 1000

/** An import request: PDUs built elsewhere (room version 11 format), for one room. */
export interface ImportRequest {
  readonly roomId: string
  readonly pdus: readonly JsonObject[]
}

export type ImportOutcome = { readonly ok: true; readonly events: PersistedEvent[] } | { readonly ok: false; readonly error: StorageError }

/** A checked PDU ready to store. */
interface ImportedPdu {
  readonly eventId: string
  readonly json: string
  readonly type: string
  readonly stateKey: string | undefined
  readonly sender: string
  readonly content: JsonObject
  readonly depth: number
  readonly originServerTs: number
  readonly prevEvents: readonly string[]
  streamOrdering?: bigint
}

/**
 * Stores history built elsewhere (backfill-style, ARCHITECTURE §3 `backfill` stream) inside
 * `trx`, which MUST be a backfill-stream ID transaction; same ownership rules as live persists
 * (`acquireRoom`). The room MUST exist.
 *
 * Per request, every PDU is checked first (shape, `room_id`, content hash, event ID when given,
 * size); one bad PDU refuses the whole request (`RejectedEventError` with its index) and stores
 * nothing of it. Signatures and authorization are NOT checked: the caller vouches for the
 * events (a federation layer would verify them before importing).
 *
 * Then: events already stored are answered with their stored position (so a retry is
 * idempotent); new ones get negative stream orderings, deeper events closer to zero, so stream
 * order agrees with depth within a batch; their edges, state_events, memberships and redactions
 * are stored; they stop being backward extremities and their prev_events that are not stored
 * become ones. Current state, forward extremities and the head row are never touched, so the
 * live snapshot `cached` stays valid; it is returned for the caller's cache.
 *
 * @example
 * const outcomes = await backfill.transaction((trx, allocate) => importBatch(trx, allocate, deps, roomId, requests, cached))
 */
export async function importBatch(
  trx: Transaction<Database>,
  allocate: (n: number, rooms?: readonly string[]) => Promise<bigint[]>,
  deps: { readonly writer: string; readonly clock: () => number; readonly log: Logger },
  roomId: string,
  requests: readonly ImportRequest[],
  cached: RoomSnapshot | undefined,
): Promise<{ outcomes: ImportOutcome[]; snapshot: RoomSnapshot | undefined; stored: number }> {
  const { head, snapshot } = await acquireRoom(trx, roomId, deps.writer, cached, deps.log)
  if (head === undefined) {
    const error = new StorageError('ES_ROOM_NOT_FOUND', `room ${roomId} does not exist; import needs an existing room`)
    return { outcomes: requests.map(() => ({ ok: false, error })), snapshot: undefined, stored: 0 }
  }

  const checked: (ImportedPdu[] | StorageError)[] = requests.map((request) => checkPdus(roomId, request.pdus))
  const wanted = new Set<string>()
  for (const pdus of checked) {
    if (pdus instanceof StorageError) continue
    for (const pdu of pdus) {
      wanted.add(pdu.eventId)
      for (const prev of pdu.prevEvents) wanted.add(prev)
    }
  }
  const existing = await storedEvents(trx, [...wanted])

  const fresh = new Map<string, ImportedPdu>()
  const outcomes: ((PersistedEvent | ImportedPdu)[] | StorageError)[] = checked.map((pdus) => {
    if (pdus instanceof StorageError) return pdus
    const foreign = pdus.findIndex((pdu) => {
      const stored = existing.get(pdu.eventId)
      return stored !== undefined && stored.roomId !== roomId
    })
    if (foreign >= 0) {
      return new RejectedEventError('ES_BAD_EVENT', foreign, `event ${pdus[foreign]?.eventId} is already stored in another room`)
    }
    return pdus.map((pdu) => {
      const answer = existing.get(pdu.eventId)?.answer ?? fresh.get(pdu.eventId)
      if (answer !== undefined) return answer
      fresh.set(pdu.eventId, pdu)
      return pdu
    })
  })

  const newEvents = [...fresh.values()].sort((a, b) => b.depth - a.depth)
  if (newEvents.length > 0) {
    const ids = (await allocate(newEvents.length, [roomId])).sort((a, b) => (a > b ? -1 : a < b ? 1 : 0))
    newEvents.forEach((pdu, i) => {
      pdu.streamOrdering = ids[i] as bigint
    })
    await appendEventRows(trx, importRows(roomId, newEvents, deps.writer, deps.clock()))
    const missing = new Set<string>()
    for (const pdu of newEvents) {
      for (const prev of pdu.prevEvents) if (!existing.has(prev) && !fresh.has(prev)) missing.add(prev)
    }
    await updateBackwardExtremities(trx, roomId, { stored: newEvents.map((pdu) => pdu.eventId), missing: [...missing] })
  }
  deps.log.debug({ roomId, imported: newEvents.length }, 'events imported')

  return {
    outcomes: outcomes.map((outcome) =>
      outcome instanceof StorageError
        ? { ok: false, error: outcome }
        : {
            ok: true,
            events: outcome.map((item) =>
              'event_id' in item ? item : { event_id: item.eventId, stream_ordering: item.streamOrdering as bigint, writer: deps.writer },
            ),
          },
    ),
    snapshot,
    stored: newEvents.length,
  }
}

/** Checks and normalizes one request's PDUs, or refuses the request. */
function checkPdus(roomId: string, pdus: readonly JsonObject[]): ImportedPdu[] | StorageError {
  if (!Array.isArray(pdus) || pdus.length === 0 || pdus.length > maxPdusPerImport) {
    return new StorageError('ES_BAD_EVENT', `an import carries 1 to ${maxPdusPerImport} PDUs`)
  }
  const out: ImportedPdu[] = []
  for (const [index, raw] of pdus.entries()) {
    const result = checkPdu(roomId, raw)
    if (typeof result === 'string') return new RejectedEventError('ES_BAD_EVENT', index, result)
    if ('tooLarge' in result) return new RejectedEventError('ES_EVENT_TOO_LARGE', index, result.tooLarge)
    out.push(result)
  }
  return out
}

function checkPdu(roomId: string, raw: JsonObject): ImportedPdu | string | { tooLarge: string } {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return 'a PDU must be an object'
  const { event_id: claimedId, unsigned: _unsigned, ...pdu } = raw
  const { type, sender, content, depth, origin_server_ts: ts, prev_events: prevs, auth_events: auths, hashes } = pdu
  if (pdu['room_id'] !== roomId) return `room_id must be ${roomId}`
  if (typeof type !== 'string' || type === '') return 'type must be a non-empty string'
  if (typeof sender !== 'string' || !/^@[^:]+:.+$/s.test(sender)) return 'sender must be a user ID'
  if (pdu['state_key'] !== undefined && typeof pdu['state_key'] !== 'string') return 'state_key must be a string'
  if (typeof content !== 'object' || content === null || Array.isArray(content)) return 'content must be an object'
  if (typeof depth !== 'number' || !Number.isSafeInteger(depth) || depth < 0) return 'depth must be a non-negative integer'
  if (typeof ts !== 'number' || !Number.isSafeInteger(ts)) return 'origin_server_ts must be an integer'
  if (!isStringArray(prevs)) return 'prev_events must be an array of event IDs'
  if (!isStringArray(auths)) return 'auth_events must be an array of event IDs'
  const sha256 = typeof hashes === 'object' && hashes !== null ? (hashes as JsonObject)['sha256'] : undefined
  let eventId: string
  let json: string
  try {
    if (typeof sha256 !== 'string' || sha256 !== computeContentHash(pdu)) return 'hashes.sha256 does not match the content hash'
    eventId = computeEventId(pdu)
    json = encodeCanonicalJson(pdu)
  } catch (err) {
    if (err instanceof StorageError) return err.message
    throw err
  }
  if (claimedId !== undefined && claimedId !== eventId) return `event_id ${String(claimedId)} does not match the reference hash (${eventId})`
  const size = checkEventSize(pdu, json)
  if (!size.ok) return { tooLarge: size.reason }
  return {
    eventId,
    json,
    type,
    stateKey: pdu['state_key'] as string | undefined,
    sender,
    content: content as JsonObject,
    depth,
    originServerTs: ts,
    prevEvents: [...new Set(prevs)],
  }
}

function importRows(roomId: string, pdus: readonly ImportedPdu[], writer: string, now: number): EventBatchRows {
  const rows = emptyBatchRows()
  for (const pdu of pdus) {
    const streamOrdering = pdu.streamOrdering as bigint
    const membership = pdu.type === 'm.room.member' && typeof pdu.content['membership'] === 'string' ? pdu.content['membership'] : null
    const redacts = pdu.type === 'm.room.redaction' && typeof pdu.content['redacts'] === 'string' ? pdu.content['redacts'] : null
    rows.events.push({
      stream_ordering: streamOrdering,
      event_id: pdu.eventId,
      room_id: roomId,
      type: pdu.type,
      state_key: pdu.stateKey ?? null,
      sender: pdu.sender,
      origin_server_ts: pdu.originServerTs,
      received_ts: now,
      depth: pdu.depth,
      instance_name: writer,
      redacts,
      membership,
    })
    rows.eventJson.push({ event_id: pdu.eventId, room_id: roomId, json: pdu.json })
    for (const prev of pdu.prevEvents) rows.edges.push({ event_id: pdu.eventId, prev_event_id: prev, room_id: roomId })
    if (pdu.stateKey !== undefined) {
      rows.stateEvents.push({ event_id: pdu.eventId, room_id: roomId, type: pdu.type, state_key: pdu.stateKey, prev_state_event_id: null })
    }
    if (redacts !== null) rows.redactions.push({ event_id: pdu.eventId, redacts })
    const relation = relationOf(pdu.content, pdu.stateKey)
    if (relation) rows.relations.push(relationRow({ eventId: pdu.eventId, roomId, sender: pdu.sender, type: pdu.type, streamOrdering }, relation))
    if (membership !== null && pdu.stateKey !== undefined) {
      rows.memberships.push({
        event_id: pdu.eventId,
        room_id: roomId,
        user_id: pdu.stateKey,
        sender: pdu.sender,
        membership,
        stream_ordering: streamOrdering,
        depth: pdu.depth,
      })
    }
  }
  return rows
}

/** Stored events among `eventIds`: their room and their answer. */
async function storedEvents(trx: Transaction<Database>, eventIds: readonly string[]): Promise<Map<string, { roomId: string; answer: PersistedEvent }>> {
  const found = new Map<string, { roomId: string; answer: PersistedEvent }>()
  if (eventIds.length === 0) return found
  const rows = await trx
    .selectFrom('events')
    .select(['event_id', 'room_id', 'stream_ordering', 'instance_name'])
    .where('event_id', 'in', [...eventIds])
    .execute()
  for (const row of rows) {
    found.set(row.event_id, {
      roomId: row.room_id,
      answer: { event_id: row.event_id, stream_ordering: row.stream_ordering, writer: row.instance_name },
    })
  }
  return found
}

function isStringArray(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((item) => typeof item === 'string')
}
