import type { Kysely } from 'kysely'
import { accountDataPosition, usersWithAccountDataChanges } from '../storage/account-data.js'
import type { Logger } from '../storage/logger.js'
import type { Database } from '../storage/schema.js'
import { createUserWaiters, type WaitOutcome } from './user-waiters.js'

export interface UserDataWatch {
  /**
   * Resolves `advanced` once account data or push rules of `userId` change after position
   * `after`, `timeout` after `timeoutMs`, `aborted` when `signal` aborts.
   */
  wait(userId: string, after: bigint, timeoutMs: number, signal: AbortSignal): Promise<WaitOutcome>
}

/**
 * Wakes long-polling syncs when their user's account data changes (set on another device, or
 * through another api worker). While any sync waits, one poll per `intervalMs` (default 250)
 * reads the account data position and, when it moved, which users changed: one indexed query
 * per process and interval, whatever the number of waiting syncs or the transport.
 *
 * @example
 * const watch = createUserDataWatch({ db, log })
 * await watch.wait(userId, since.accountData, 30_000, signal)
 */
export function createUserDataWatch(options: { db: Kysely<Database>; log: Logger; intervalMs?: number }): UserDataWatch {
  const { db } = options
  const log = options.log.child({ component: 'user-data-watch' })
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
      const position = await accountDataPosition(db)
      if (from !== undefined && position > from) {
        for (const [user, newest] of await usersWithAccountDataChanges(db, from, position)) {
          waiters.wake(user, (after) => newest > after)
        }
      }
      if (last === undefined || position > last) last = position
    } catch (err) {
      if (from !== undefined && (rescanFrom === undefined || from < rescanFrom)) rescanFrom = from
      log.warn({ err }, 'could not read account data changes')
    }
    if (waiters.size > 0) timer ??= setTimeout(() => void poll(), intervalMs)
    else last = rescanFrom = undefined
  }

  return {
    wait(userId, after, timeoutMs, signal) {
      const outcome = waiters.wait(userId, after, timeoutMs, signal)
      // The next poll reads from this waiter's position on, so a change after `after` is seen
      // whether it landed before or after this call.
      if (rescanFrom === undefined || after < rescanFrom) rescanFrom = after
      if (waiters.size > 0) timer ??= setTimeout(() => void poll(), intervalMs)
      return outcome
    },
  }
}
