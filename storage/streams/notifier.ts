import type { RoomStreamToken } from './room-stream-token.js'
import type { StreamTracker } from './stream-tracker.js'
import type { RoomHint } from './writer-position.js'

/** What `Notifier.wait` waits for. */
export interface NotifierWaitOptions {
  /** Rooms of interest, or `'any'` for any room. */
  rooms: ReadonlySet<string> | 'any'
  /** The token up to which the caller has already read. */
  after: RoomStreamToken
  timeoutMs: number
  signal?: AbortSignal
}

/**
 * Lets callers (the `/sync` long-poll) wait for "anything new for these rooms after token T"
 * (ARCHITECTURE §2 step 10).
 */
export interface Notifier {
  /**
   * Resolves `'advanced'` once a writer has advanced past its position in `after` with a room
   * hint touching one of `rooms` (an absent hint counts as every room; an empty hint as none,
   * also for `'any'`): at once when that already happened before the call, as far as the
   * notifier's recent history tells (beyond it, conservatively `'advanced'`). Otherwise
   * `'timeout'` after `timeoutMs`, or `'aborted'` when `signal` aborts.
   *
   * `'advanced'` is a hint, not a promise: the caller re-reads up to the tracker's current
   * token and may find nothing new (a rolled-back ID, a coarse hint) and wait again.
   */
  wait(options: NotifierWaitOptions): Promise<'advanced' | 'timeout' | 'aborted'>
  /**
   * Which of `rooms` may have events after `after` up to the tracker's current token, from the
   * notifier's recent history alone (no query): a superset of the rooms that do (a room in a
   * writer's advance may have its event below `after`'s position for that writer). Undefined
   * when the history cannot tell: `after` is older than it, an advance in range has no hint,
   * or the tracker ran over unannounced rows past `after` (`ranOverUnannounced`).
   */
  roomsChangedAfter(rooms: readonly string[], after: RoomStreamToken): Set<string> | undefined
}

/** Advances remembered to answer waits whose `after` is slightly behind the tracker. */
const historySize = 1024

interface Advance {
  readonly writer: string
  readonly next: bigint
  readonly rooms: RoomHint
}

interface Waiter {
  readonly rooms: ReadonlySet<string> | 'any'
  readonly after: RoomStreamToken
  readonly wake: () => void
}

/**
 * A notifier over `tracker`'s advances. Waiters are indexed by room, so an advance touching a
 * few rooms only looks at their waiters (plus `'any'` waiters; an advance without hint wakes
 * everyone it is past).
 *
 * @example
 * const notifier = createNotifier(tracker)
 * const since = tracker.currentToken() // after reading everything up to it
 * const outcome = await notifier.wait({ rooms: new Set(joinedRooms), after: since, timeoutMs: 30_000, signal })
 * if (outcome === 'advanced') readRooms(joinedRooms, since, tracker.currentToken())
 */
export function createNotifier(tracker: StreamTracker): Notifier {
  const byRoom = new Map<string, Set<Waiter>>()
  const anyRoom = new Set<Waiter>()
  const history: Advance[] = []
  /**
   * Per writer, the position from which `history` holds every advance: a wait whose `after`
   * is below it cannot be answered from history.
   */
  const horizon = new Map<string, bigint>(tracker.positions())

  const isPast = (writer: string, next: bigint, after: RoomStreamToken): boolean => {
    const id = tracker.writerId(writer)
    return next > (id === undefined ? after.stream : after.positionOf(id))
  }
  const touches = (rooms: RoomHint, wanted: ReadonlySet<string> | 'any'): boolean => {
    if (rooms === undefined) return true
    if (wanted === 'any') return rooms.length > 0
    return rooms.some((room) => wanted.has(room))
  }

  tracker.onAdvance((writer, prev, next, rooms) => {
    if (!horizon.has(writer)) horizon.set(writer, prev)
    history.push({ writer, next, rooms })
    if (history.length > historySize) {
      const evicted = history.shift()
      if (evicted) horizon.set(evicted.writer, evicted.next)
    }
    const candidates = new Set<Waiter>(anyRoom)
    if (rooms === undefined) for (const waiters of byRoom.values()) for (const waiter of waiters) candidates.add(waiter)
    else for (const room of rooms) for (const waiter of byRoom.get(room) ?? []) candidates.add(waiter)
    for (const waiter of candidates) {
      if (touches(rooms, waiter.rooms) && isPast(writer, next, waiter.after)) waiter.wake()
    }
  })

  /**
   * Whether `history` holds every advance past `after` (see `horizon`). Rows the tracker's
   * linear position was extended over (a stuck writer's, committed but never announced) come
   * with no advance: a token past them is beyond what history tells.
   */
  const historyCovers = (after: RoomStreamToken): boolean => {
    if (tracker.ranOverUnannounced(after)) return false
    for (const [writer, position] of tracker.positions()) {
      if (!isPast(writer, position, after)) continue
      const from = horizon.get(writer)
      if (from === undefined || isPast(writer, from, after)) return false
    }
    return true
  }

  /** True when something relevant to `rooms` happened after `after` before this call (or may have). */
  const alreadyAdvanced = (rooms: ReadonlySet<string> | 'any', after: RoomStreamToken): boolean => {
    if (!historyCovers(after)) return true
    return history.some((advance) => isPast(advance.writer, advance.next, after) && touches(advance.rooms, rooms))
  }

  return {
    roomsChangedAfter(rooms, after) {
      if (!historyCovers(after)) return undefined
      const wanted = new Set(rooms)
      const changed = new Set<string>()
      for (const advance of history) {
        if (!isPast(advance.writer, advance.next, after)) continue
        if (advance.rooms === undefined) return undefined
        for (const room of advance.rooms) if (wanted.has(room)) changed.add(room)
      }
      return changed
    },

    wait({ rooms, after, timeoutMs, signal }) {
      if (signal?.aborted) return Promise.resolve('aborted')
      if (alreadyAdvanced(rooms, after)) return Promise.resolve('advanced')
      return new Promise((resolve) => {
        const finish = (outcome: 'advanced' | 'timeout' | 'aborted'): void => {
          clearTimeout(timer)
          signal?.removeEventListener('abort', onAbort)
          if (rooms === 'any') anyRoom.delete(waiter)
          else {
            for (const room of rooms) {
              const waiters = byRoom.get(room)
              waiters?.delete(waiter)
              if (waiters?.size === 0) byRoom.delete(room)
            }
          }
          resolve(outcome)
        }
        const waiter: Waiter = { rooms, after, wake: () => finish('advanced') }
        const onAbort = (): void => finish('aborted')
        const timer = setTimeout(() => finish('timeout'), timeoutMs)
        signal?.addEventListener('abort', onAbort, { once: true })
        if (rooms === 'any') anyRoom.add(waiter)
        else {
          for (const room of rooms) {
            let waiters = byRoom.get(room)
            if (!waiters) byRoom.set(room, (waiters = new Set()))
            waiters.add(waiter)
          }
        }
      })
    },
  }
}
