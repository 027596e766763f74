import { encodeCanonicalObject, type CanonicalMemberCache } from '../storage/events/canonical-json.js'
import { contentHashOfBytes, eventIdOfRedactedBytes } from '../storage/events/event-hashes.js'
import { redactedView, type JsonObject } from '../storage/events/redaction.js'
import { signBytes, type SigningKey } from '../storage/events/signing.js'

/** The fields of a room version 11 PDU the persister decides, besides the client's. */
export interface PduFields {
  readonly roomId: string
  readonly type: string
  readonly stateKey?: string
  readonly sender: string
  readonly content: Readonly<Record<string, unknown>>
  readonly originServerTs: number
  readonly prevEvents: readonly string[]
  readonly authEvents: readonly string[]
  readonly depth: number
}

/** A built PDU: its ID, the signed PDU (without `event_id`) and that PDU as canonical JSON. */
export interface BuiltPdu {
  readonly eventId: string
  readonly pdu: JsonObject
  readonly json: string
}

/**
 * Builds a room version 11 PDU created by this server: sets `hashes.sha256` (content hash),
 * derives the event ID (`$` + reference hash, URL-safe base64) and signs the redacted form with
 * the server key. `origin` is left out (v11 no longer protects it); `unsigned` is never set.
 *
 * @throws StorageError `ES_BAD_EVENT` when the content is not canonical-JSON encodable (floats, …).
 * @example
 * const { eventId, json } = buildPdu({ roomId, type: 'm.room.message', sender, content: { body: 'hi' },
 *   originServerTs: Date.now(), prevEvents: ['$prev'], authEvents: ['$create', '$pl', '$member'], depth: 5 },
 *   'example.org', key)
 */
export function buildPdu(fields: PduFields, serverName: string, key: SigningKey): BuiltPdu {
  const unsigned: JsonObject = {
    auth_events: [...fields.authEvents],
    content: fields.content,
    depth: fields.depth,
    origin_server_ts: fields.originServerTs,
    prev_events: [...fields.prevEvents],
    room_id: fields.roomId,
    sender: fields.sender,
    type: fields.type,
  }
  if (fields.stateKey !== undefined) unsigned['state_key'] = fields.stateKey
  // Three views of one event are encoded: without hashes (content hash), redacted (event ID and
  // signature cover the same bytes), and whole (stored). Members they share are encoded once.
  const members: CanonicalMemberCache = new Map()
  const hashed = { ...unsigned, hashes: { sha256: contentHashOfBytes(encodeCanonicalObject(unsigned, members)) } }
  const redactedBytes = Buffer.from(encodeCanonicalObject(redactedView(hashed), members), 'utf8')
  const pdu = { ...hashed, signatures: { [serverName]: { [key.keyId]: signBytes(redactedBytes, key) } } }
  return { eventId: eventIdOfRedactedBytes(redactedBytes), pdu, json: encodeCanonicalObject(pdu, members) }
}
