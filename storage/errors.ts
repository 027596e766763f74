/**
 * Errors every layer can raise, each with a stable code. The API maps every code to a Matrix
 * error in `api/matrix-errors.ts`; a new code does not compile until it is mapped there.
 * Codes are never reused: retire one by leaving it out of `ErrorCode`, never by renaming.
 *
 * Expected outcomes (a duplicate transaction ID, a version conflict) are return values, not
 * errors. Wrap lower-level failures with `cause`.
 *
 * @example
 * throw new StorageError('ES_INVALID_TOKEN', `malformed stream token ${JSON.stringify(raw)}`)
 */
export const errorCodes = [
  /** A stream token a client sent could not be parsed. */
  'ES_INVALID_TOKEN',
  /** A request parameter (other than a token) is malformed. */
  'ES_INVALID_PARAM',
  /** The event does not exist or the caller may not see it. */
  'ES_EVENT_NOT_FOUND',
  /** The room does not exist. */
  'ES_ROOM_NOT_FOUND',
  /** The authorization rules reject the event; the message says which rule. */
  'ES_FORBIDDEN',
  /** An event is larger than the 65,536-byte PDU limit. */
  'ES_EVENT_TOO_LARGE',
  /** An event or PDU is structurally invalid. */
  'ES_BAD_EVENT',
  /** A signature on uploaded keys does not verify. */
  'ES_INVALID_SIGNATURE',
  /** This writer does not own the room (the shard map or the room's ownership epoch says so). */
  'ES_NOT_OWNER',
  /** A persist transaction lost the room's ownership epoch (a stale or zombie writer). */
  'ES_FENCED',
  /** A dependency (database, persister) is unavailable; the caller may retry later. */
  'ES_UNAVAILABLE',
  /** The database schema is older than this code: migrations are pending. */
  'ES_SCHEMA_BEHIND',
  /** The database schema is newer than this code's compatibility version. */
  'ES_SCHEMA_AHEAD',
  /** The configuration is invalid; the message lists every problem. */
  'ES_CONFIG_INVALID',
] as const

export type ErrorCode = (typeof errorCodes)[number]

export class StorageError extends Error {
  override readonly name = 'StorageError'
  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options)
  }
}

/** True when `err` is a StorageError with one of `codes` (any code when none given). */
export function isStorageError(err: unknown, ...codes: ErrorCode[]): err is StorageError {
  return err instanceof StorageError && (codes.length === 0 || codes.includes(err.code))
}
