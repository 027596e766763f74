import { StorageError } from '../storage/errors.js'

/**
 * `ES_NOT_OWNER` with the writer that owns the room, so a caller can refresh its shard map and
 * send the request there (the replication endpoint answers 421 with `owner`).
 *
 * @example
 * if (err instanceof NotOwnerError) return retryOn(err.owner)
 */
export class NotOwnerError extends StorageError {
  constructor(
    readonly roomId: string,
    readonly owner: string,
    writer: string,
  ) {
    super('ES_NOT_OWNER', `room ${roomId} is owned by ${owner}, not ${writer}`)
  }
}

/** Codes a single event of a request can be refused with. */
export type RejectionCode = 'ES_FORBIDDEN' | 'ES_EVENT_TOO_LARGE' | 'ES_BAD_EVENT' | 'ES_ROOM_NOT_FOUND'

/**
 * One event of a request was refused; it and the request's later events were not stored (the
 * request's earlier events were). `reason` is the rule that refused it.
 *
 * @example
 * err.code // 'ES_FORBIDDEN'
 * err.eventIndex // 2
 * err.message // 'event 2: sender's power level 0 is below the 50 required to kick (the kick level)'
 */
export class RejectedEventError extends StorageError {
  constructor(
    code: RejectionCode,
    readonly eventIndex: number,
    readonly reason: string,
  ) {
    super(code, `event ${eventIndex}: ${reason}`)
  }
}
