import type { Kysely } from 'kysely'
import type { Logger } from '../storage/logger.js'
import type { Database } from '../storage/schema.js'
import type { Notifier } from '../storage/streams/notifier.js'
import type { RoomStreamToken } from '../storage/streams/room-stream-token.js'
import type { StreamTracker } from '../storage/streams/stream-tracker.js'
import { membershipChanged, membershipChangesBetween } from '../storage/sync.js'
import { createUserWaiters, type WaitOutcome } from './user-waiters.js'

export interface MembershipWatch {
  /**
   * Resolves `advanced` once a membership event of `userId` (in any room) lands after `after`,
   * `timeout` after `timeoutMs`, `aborted` when `signal` aborts.
   */
  wait(userId: string, after: RoomStreamToken, timeoutMs: number, signal: AbortSignal): Promise<WaitOutcome>
}

/**
 * Wakes long-polling syncs on their user's membership changes in rooms they do not follow yet
 * (an invite, a join from another device). One loop per process follows the stream while any
 * sync waits and reads, per advance, which users' memberships changed: one query per advance
 * (fewer under load: advances that arrive during a query are read together), however many
 * syncs wait. A waiter also checks its own user once when it starts, from its `after` token.
 *
 * @example
 * const watch = createMembershipWatch({ db, tracker, notifier, log })
 * const outcome = await watch.wait(userId, upTo.room, 30_000, signal)
 */
export function createMembershipWatch(options: { db: Kysely<Database>; tracker: StreamTracker; notifier: Notifier; log: Logger }): MembershipWatch {
  const { db, tracker, notifier } = options
  const log = options.log.child({ component: 'membership-watch' })
  const waiters = createUserWaiters<RoomStreamToken>({ onEmpty: () => idle?.abort() })
  let running = false
  /** Ends the loop's current wait when the last waiter leaves. */
  let idle: AbortController | undefined

  async function follow(from: RoomStreamToken): Promise<void> {
    let last = from
    try {
      while (waiters.size > 0) {
        idle = new AbortController()
        const outcome = await notifier.wait({ rooms: 'any', after: last, timeoutMs: 10_000, signal: idle.signal })
        if (outcome !== 'advanced') continue
        const upTo = tracker.currentToken()
        try {
          const users = await membershipChangesBetween(db, last, upTo)
          last = upTo
          for (const user of users) waiters.wake(user)
        } catch (err) {
          log.warn({ err }, 'could not read membership changes; retrying')
          await new Promise((resolve) => setTimeout(resolve, 250))
        }
      }
    } finally {
      running = false
      idle = undefined
    }
  }

  return {
    wait(userId, after, timeoutMs, signal) {
      // Registered before checking: a change the loop reads from now on wakes this waiter, and
      // the check covers (after, now]. The loop starts at a token no later than that `now`.
      const outcome = waiters.wait(userId, after, timeoutMs, signal)
      if (!running && waiters.size > 0) {
        running = true
        void follow(tracker.currentToken())
      }
      membershipChanged(db, userId, after, tracker.currentToken()).then(
        (changed) => {
          if (changed) waiters.wake(userId, (waitingAfter) => waitingAfter === after)
        },
        (err: unknown) => log.warn({ err }, 'could not check membership changes'),
      )
      return outcome
    },
  }
}
