import type { Kysely } from 'kysely'
import type { Logger } from '../storage/logger.js'
import { streamChanges } from '../storage/ordered-streams.js'
import type { Database } from '../storage/schema.js'
import { userChangesWithRooms } from '../storage/shared-rooms.js'
import { syncPositions, type StreamPositions } from '../storage/sync.js'
import { devicesWithToDeviceChanges } from '../storage/to-device.js'
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
 * process). While any sync waits, one poll per `intervalMs` (default 250, at its multiples)
 * reads the stream's position and, when it moved, which keys changed: one indexed query per
 * process and interval, whatever the number of waiting syncs or the transport.
 *
 * @example
 * const watch = createPositionWatch({ stream: syncStreams(db).accountData, log })
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
  /** Polls happen at multiples of the interval, so the watches of a process poll together. */
  const untilNextPoll = () => intervalMs - (Date.now() % intervalMs)

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
    if (waiters.size > 0) timer ??= setTimeout(() => void poll(), untilNextPoll())
    else last = rescanFrom = undefined
  }

  return {
    wait(keys, after, timeoutMs, signal) {
      const outcome = waiters.wait(keys, after, timeoutMs, signal)
      // The next poll reads from this waiter's position on, so a change after `after` is seen
      // whether it landed before or after this call.
      if (rescanFrom === undefined || after < rescanFrom) rescanFrom = after
      if (waiters.size > 0) timer ??= setTimeout(() => void poll(), untilNextPoll())
      return outcome
    },
  }
}

/** The streams besides room events a sync waits on, each as a watch polls it. */
export type SyncStreams = { readonly [K in keyof StreamPositions]: PolledStream }

/**
 * The sync streams as watches poll them: account data (keyed by user), the rooms' ephemeral
 * stream (receipts and typing, by room), to-device (by device, `toDeviceKey`), presence and
 * device lists (by the changed users and the rooms they are in).
 *
 * Their positions come from one statement (`syncPositions`): the watches poll on the same grid
 * of instants, and the reads that coincide share one query, so a process polls once per
 * interval whatever the number of streams.
 *
 * @example
 * const streams = syncStreams(db)
 * createPositionWatch({ stream: streams.presence, log })
 */
export function syncStreams(db: Kysely<Database>): SyncStreams {
  let inFlight: Promise<StreamPositions> | undefined
  const positions = () => {
    inFlight ??= syncPositions(db).finally(() => (inFlight = undefined))
    return inFlight
  }
  const stream = (name: keyof StreamPositions, label: string, changes: PolledStream['changes']): PolledStream => ({
    name: label,
    position: async () => (await positions())[name],
    changes,
  })
  return {
    accountData: stream('accountData', 'account_data', (after, upTo) => streamChanges(db, 'account_data', after, upTo)),
    ephemeral: stream('ephemeral', 'ephemeral', (after, upTo) => streamChanges(db, 'ephemeral', after, upTo)),
    toDevice: stream('toDevice', 'to_device', (after, upTo) => devicesWithToDeviceChanges(db, after, upTo)),
    presence: stream('presence', 'presence', (after, upTo) => userChangesWithRooms(db, 'presence', after, upTo)),
    deviceLists: stream('deviceLists', 'device_lists', (after, upTo) => userChangesWithRooms(db, 'device_lists_changes', after, upTo)),
  }
}
