import { createHash } from 'node:crypto'
import { StorageError } from '../errors.js'
import { canonicalJsonBytes } from './canonical-json.js'
import { redactedView } from './redaction.js'
import type { JsonObject } from './redaction.js'

/**
 * The content hash of a PDU (server-server spec, "Calculating the content hash for an event"):
 * SHA-256 over the canonical JSON of the PDU without `unsigned`, `signatures` and `hashes`, as
 * unpadded standard base64. It goes into `hashes.sha256` before the event is signed, so the
 * signature (which covers only the redacted form) still commits to the full content.
 *
 * @throws StorageError `ES_BAD_EVENT` when the PDU is not canonical-JSON encodable.
 *
 * @example
 * const pdu = { type: 'm.room.message', content: { body: 'hi' }, ... }
 * pdu.hashes = { sha256: computeContentHash(pdu) } // e.g. '5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos'
 */
export function computeContentHash(pdu: Readonly<JsonObject>): string {
  const { unsigned: _unsigned, signatures: _signatures, hashes: _hashes, ...hashed } = pdu
  return contentHashOfBytes(canonicalJsonBytes(hashed))
}

/**
 * The content hash (unpadded base64 SHA-256) of the canonical JSON of a PDU without `unsigned`,
 * `signatures` and `hashes`, for a caller that already holds those bytes (see buildPdu).
 *
 * @example
 * contentHashOfBytes(canonicalJsonBytes(unsignedPdu)) === computeContentHash(unsignedPdu) // true
 */
export function contentHashOfBytes(bytes: Uint8Array | string): string {
  return createHash('sha256').update(bytes).digest('base64').replace(/=+$/, '')
}

/**
 * The reference hash of a PDU (server-server spec, "Calculating the reference hash for an event"):
 * the raw 32-byte SHA-256 over the canonical JSON of the redacted PDU without `signatures`,
 * `unsigned` and `age_ts`. Because it covers the redacted form, redacting an event keeps its ID;
 * because the redacted form keeps `hashes`, the ID still commits to the full content once
 * `hashes.sha256` is set.
 *
 * The PDU MUST be in room version 3+ format, without an `event_id` (the ID is derived from this
 * hash, so a PDU carrying one would hash its own ID).
 *
 * @throws StorageError `ES_BAD_EVENT` when the PDU has an `event_id` or is not canonical-JSON encodable.
 *
 * @example
 * computeReferenceHash(pdu).length // 32
 */
export function computeReferenceHash(pdu: Readonly<JsonObject>): Buffer {
  if (Object.hasOwn(pdu, 'event_id')) {
    throw new StorageError('ES_BAD_EVENT', 'a room v3+ PDU must not carry event_id: its ID is derived from its reference hash')
  }
  // Redaction already drops `unsigned` and `age_ts`; only `signatures` survives it.
  const { signatures: _signatures, ...hashed } = redactedView(pdu)
  return sha256(hashed)
}

/**
 * The event ID of a PDU in room versions 4 and later: `$` followed by the reference hash as
 * unpadded URL-safe base64 (43 characters).
 *
 * @throws StorageError `ES_BAD_EVENT` as `computeReferenceHash`.
 *
 * @example
 * pdu.hashes = { sha256: computeContentHash(pdu) }
 * computeEventId(pdu) // e.g. '$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg'
 */
export function computeEventId(pdu: Readonly<JsonObject>): string {
  return eventIdOf(computeReferenceHash(pdu))
}

/**
 * The event ID of a PDU whose redacted form (without `signatures`) encodes to `redactedBytes`:
 * for a caller that already holds those bytes because it signs them too (see buildPdu).
 *
 * @example
 * eventIdOfRedactedBytes(canonicalJsonBytes(redactedView(pdu))) === computeEventId(pdu) // for an unsigned pdu
 */
export function eventIdOfRedactedBytes(redactedBytes: Uint8Array): string {
  return eventIdOf(createHash('sha256').update(redactedBytes).digest())
}

function eventIdOf(referenceHash: Buffer): string {
  return `$${referenceHash.toString('base64url')}`
}

function sha256(value: unknown): Buffer {
  return createHash('sha256').update(canonicalJsonBytes(value)).digest()
}
