import type { Kysely } from 'kysely'
import type { Logger } from '../storage/logger.js'
import type { Database } from '../storage/schema.js'
import type { RoomStreamToken } from '../storage/streams/room-stream-token.js'
import type { StreamTracker } from '../storage/streams/stream-tracker.js'
import { hintedMembers } from '../storage/streams/writer-position.js'
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
 * (an invite, a join from another device), following every stream advance while any sync waits.
 *
 * An advance whose hint lists the users whose membership changed (persisters add them, see
 * `streamHint`) wakes those users at once, with no query. An advance without such a hint (a
 * poll while the bus is down, a gap, an older writer) is read from the database: one query per
 * run of such advances (those that arrive during a query are read together by the next). A
 * waiter also checks its own user once when it starts, from its `after` token.
 *
 * The api worker of the e2e benchmark spent 40 % of its CPU on a query per advance before the
 * hints (`scripts/bench/RESULTS.md`).
 *
 * @example
 * const watch = createMembershipWatch({ db, tracker, log })
 * const outcome = await watch.wait(userId, upTo.room, 30_000, signal)
 */
export function createMembershipWatch(options: { db: Kysely<Database>; tracker: StreamTracker; log: Logger }): MembershipWatch {
  const { db, tracker } = options
  const log = options.log.child({ component: 'membership-watch' })
  const waiters = createUserWaiters<RoomStreamToken>()
  /** The token advances have been handed out up to (by hint or by query) while syncs waited. */
  let seen = tracker.currentToken()
  /** Start of a run of unhinted advances still to read, if any. */
  let unreadFrom: RoomStreamToken | undefined
  let reading = false

  tracker.onAdvance((_writer, _prev, _next, hint) => {
    // Without waiters nothing is read, and `seen` may fall behind: a later query then reads a
    // wider range than needed, never a narrower one.
    if (waiters.size === 0) return
    const before = seen
    seen = tracker.currentToken()
    const members = hintedMembers(hint)
    // Rows the linear position ran over without an advance (a dead writer's) have no hint either.
    if (members === undefined || tracker.ranOverUnannounced(before)) {
      unreadFrom ??= before
      void readUnhinted()
    } else {
      for (const member of members) waiters.wake(member)
    }
  })

  /** Reads the membership changes of unhinted advances, one query per run, until none is left. */
  async function readUnhinted(): Promise<void> {
    if (reading) return
    reading = true
    try {
      while (unreadFrom !== undefined && waiters.size > 0) {
        const from = unreadFrom
        const upTo = seen
        unreadFrom = undefined
        try {
          for (const user of await membershipChangesBetween(db, from, upTo)) waiters.wake(user)
        } catch (err) {
          log.warn({ err }, 'could not read membership changes; retrying')
          unreadFrom = from
          await new Promise((resolve) => setTimeout(resolve, 250))
        }
      }
    } finally {
      reading = false
      if (waiters.size === 0) unreadFrom = undefined
    }
  }

  return {
    wait(userId, after, timeoutMs, signal) {
      // Registered before checking: every advance from now on reaches this waiter (by hint or
      // by query), and the check covers (after, now].
      const outcome = waiters.wait(userId, after, timeoutMs, signal)
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
