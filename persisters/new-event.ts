import { StorageError } from '../storage/errors.js'

/**
 * What callers (api workers, over replication or in-process) hand the persister: the
 * client-supplied parts of an event. The persister adds room_id, prev_events, auth_events,
 * depth, hashes and signatures, and derives the event ID.
 */
export interface NewEvent {
  readonly type: string
  /** Present (possibly `''`) exactly for state events. */
  readonly state_key?: string
  /** A user of this server. */
  readonly sender: string
  readonly content: Readonly<Record<string, unknown>>
  /** The client transaction: `(room, sender, deviceId, txnId)` is unique; a repeat returns the original event. */
  readonly txn?: { readonly deviceId: string; readonly txnId: string }
  /** Milliseconds since the epoch; default: the persister's clock. */
  readonly origin_server_ts?: number
  /** For m.room.redaction: the event redacted (room v11 keeps it in `content.redacts`, where it is copied). */
  readonly redacts?: string
}

/** One replication request: a caller-chosen ID (its retries reuse it) and the events, in order. */
export interface PersistRequest {
  readonly requestId: string
  readonly roomId: string
  readonly events: readonly NewEvent[]
  /**
   * Whether the answer is stored under `requestId` (`replication_requests`), so that the same
   * request sent again (a retry after a lost answer, after a restart) gets it instead of
   * persisting twice. Default true. A caller in the persister's own process that never sends an
   * ID twice (a client request's fresh ID; the client's retry is a new request, deduplicated by
   * its transaction ID) sets false and saves the row.
   */
  readonly recordAnswer?: boolean
}

/** The answer for one persisted (or deduplicated) event. */
export interface PersistedEvent {
  readonly event_id: string
  /** > 0 for live events, < 0 for imported history. */
  readonly stream_ordering: bigint
  /** The writer that allocated `stream_ordering`. */
  readonly writer: string
}

/** Longest request ID accepted (they are stored in `replication_requests`). */
export const maxRequestIdLength = 255

/** Most events in one persist request (createRoom with many invites stays far below). */
export const maxEventsPerRequest = 1000

/**
 * JSON schema of a `NewEvent` (fastify validates replication bodies with it). Kept equivalent to
 * `validatePersistRequest`, which library callers go through.
 */
export const newEventJsonSchema = {
  type: 'object',
  required: ['type', 'sender', 'content'],
  additionalProperties: false,
  properties: {
    type: { type: 'string', minLength: 1 },
    state_key: { type: 'string' },
    sender: { type: 'string', minLength: 1 },
    content: { type: 'object' },
    txn: {
      type: 'object',
      required: ['deviceId', 'txnId'],
      additionalProperties: false,
      properties: { deviceId: { type: 'string', minLength: 1 }, txnId: { type: 'string', minLength: 1 } },
    },
    origin_server_ts: { type: 'integer', minimum: 0 },
    redacts: { type: 'string', minLength: 1 },
  },
} as const

/**
 * Checks a persist request's shape (not its authorization).
 *
 * @throws StorageError `ES_BAD_EVENT` naming the first problem (and the event index).
 * @example
 * validatePersistRequest({ requestId: 'r1', roomId: '!r:hs', events: [{ type: 'm.room.message', sender: '@a:hs', content: {} }] })
 */
export function validatePersistRequest(request: PersistRequest): void {
  if (typeof request.requestId !== 'string' || request.requestId.length === 0 || request.requestId.length > maxRequestIdLength) {
    throw new StorageError('ES_BAD_EVENT', `requestId must be 1 to ${maxRequestIdLength} characters`)
  }
  if (typeof request.roomId !== 'string' || !request.roomId.startsWith('!')) {
    throw new StorageError('ES_BAD_EVENT', 'roomId must be a room ID (starting with !)')
  }
  if (!Array.isArray(request.events) || request.events.length === 0 || request.events.length > maxEventsPerRequest) {
    throw new StorageError('ES_BAD_EVENT', `a request carries 1 to ${maxEventsPerRequest} events`)
  }
  request.events.forEach((event, index) => {
    const problem = eventProblem(event)
    if (problem !== undefined) throw new StorageError('ES_BAD_EVENT', `event ${index}: ${problem}`)
  })
}

function eventProblem(event: NewEvent): string | undefined {
  if (typeof event !== 'object' || event === null) return 'must be an object'
  if (typeof event.type !== 'string' || event.type === '') return 'type must be a non-empty string'
  if (typeof event.sender !== 'string' || event.sender === '') return 'sender must be a non-empty string'
  if (event.state_key !== undefined && typeof event.state_key !== 'string') return 'state_key must be a string'
  if (typeof event.content !== 'object' || event.content === null || Array.isArray(event.content)) return 'content must be an object'
  if (event.txn !== undefined) {
    const { deviceId, txnId } = event.txn
    if (typeof deviceId !== 'string' || deviceId === '' || typeof txnId !== 'string' || txnId === '') {
      return 'txn needs non-empty deviceId and txnId'
    }
  }
  if (event.origin_server_ts !== undefined && (!Number.isSafeInteger(event.origin_server_ts) || event.origin_server_ts < 0)) {
    return 'origin_server_ts must be a non-negative integer'
  }
  if (event.redacts !== undefined && (typeof event.redacts !== 'string' || event.redacts === '')) return 'redacts must be an event ID'
  return undefined
}
