import type { Kysely } from 'kysely'
import type { Logger } from '../storage/logger.js'
import { streamChanges, streamPosition, type TableStream } from '../storage/ordered-streams.js'
import type { Database } from '../storage/schema.js'
import { presenceChanges } from '../storage/presence.js'
import { devicesWithToDeviceChanges, toDevicePosition } from '../storage/to-device.js'
import { createUserWaiters, type WaitOutcome } from './user-waiters.js'

export interface PositionWatch {
  /**
   * Resolves `advanced` once the stream changes for any of `keys` after position `after`,
   * `timeout` after `timeoutMs`, `aborted` when `signal` aborts.
   */
  wait(keys: string | readonly string[], after: bigint, timeoutMs: number, signal: AbortSignal): Promise<WaitOutcome>
}

/** A single-writer-ordered stream a watch polls: its position, and what changed in a range. */
export interface PolledStream {
  /** What the stream is, for logs. */
  readonly name: string
  /** The highest committed position (nothing can still appear below it). */
  position(): Promise<bigint>
  /** Keys (users, rooms) with changes in `(after, upTo]`, each with its newest position there. */
  changes(after: bigint, upTo: bigint): Promise<Map<string, bigint>>
}

/**
 * Wakes long-polling syncs when a polled stream changes for them (written through any
 * process). While any sync waits, one poll per `intervalMs` (default 250) reads the stream's
 * position and, when it moved, which keys changed: one indexed query per process and
 * interval, whatever the number of waiting syncs or the transport.
 *
 * @example
 * const watch = createPositionWatch({ stream: tableStream(db, 'account_data'), log })
 * await watch.wait(userId, since.accountData, 30_000, signal)
 */
export function createPositionWatch(options: { stream: PolledStream; log: Logger; intervalMs?: number }): PositionWatch {
  const { stream } = options
  const log = options.log.child({ component: 'position-watch', stream: stream.name })
  const intervalMs = options.intervalMs ?? 250
  const waiters = createUserWaiters<bigint>()
  /** Position up to which changes were read. */
  let last: bigint | undefined
  /** The oldest `after` of waiters that came since the last poll started: read from there. */
  let rescanFrom: bigint | undefined
  let timer: NodeJS.Timeout | undefined

  async function poll(): Promise<void> {
    timer = undefined
    if (waiters.size === 0) {
      last = rescanFrom = undefined
      return
    }
    const from = last === undefined ? rescanFrom : rescanFrom === undefined || last < rescanFrom ? last : rescanFrom
    rescanFrom = undefined
    try {
      const position = await stream.position()
      if (from !== undefined && position > from) {
        for (const [key, newest] of await stream.changes(from, position)) {
          waiters.wake(key, (after) => newest > after)
        }
      }
      if (last === undefined || position > last) last = position
    } catch (err) {
      if (from !== undefined && (rescanFrom === undefined || from < rescanFrom)) rescanFrom = from
      log.warn({ err }, 'could not read stream changes')
    }
    if (waiters.size > 0) timer ??= setTimeout(() => void poll(), intervalMs)
    else last = rescanFrom = undefined
  }

  return {
    wait(keys, after, timeoutMs, signal) {
      const outcome = waiters.wait(keys, after, timeoutMs, signal)
      // The next poll reads from this waiter's position on, so a change after `after` is seen
      // whether it landed before or after this call.
      if (rescanFrom === undefined || after < rescanFrom) rescanFrom = after
      if (waiters.size > 0) timer ??= setTimeout(() => void poll(), intervalMs)
      return outcome
    },
  }
}

/**
 * A table stream (storage/ordered-streams.ts): account data and push rules keyed by user, or the
 * rooms' ephemeral stream (receipts and typing) keyed by room.
 *
 * @example
 * createPositionWatch({ stream: tableStream(db, 'ephemeral'), log })
 */
export function tableStream(db: Kysely<Database>, stream: TableStream): PolledStream {
  return { name: stream, position: () => streamPosition(db, stream), changes: (after, upTo) => streamChanges(db, stream, after, upTo) }
}

/**
 * The to-device stream, keyed by device (`toDeviceKey`).
 *
 * @example
 * createPositionWatch({ stream: toDeviceStream(db), log })
 */
export function toDeviceStream(db: Kysely<Database>): PolledStream {
  return { name: 'to_device', position: () => toDevicePosition(db), changes: (after, upTo) => devicesWithToDeviceChanges(db, after, upTo) }
}

/**
 * The presence stream, keyed by the changed users and by the rooms they are joined to (a sync
 * waits on its user and its joined rooms).
 *
 * @example
 * createPositionWatch({ stream: presenceStream(db), log })
 */
export function presenceStream(db: Kysely<Database>): PolledStream {
  return { name: 'presence', position: () => streamPosition(db, 'presence'), changes: (after, upTo) => presenceChanges(db, after, upTo) }
}
