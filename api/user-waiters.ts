/** How a wait ended. */
export type WaitOutcome = 'advanced' | 'timeout' | 'aborted'

/** Long-poll waiters keyed by user, each with data of its own (the position it waits after). */
export interface UserWaiters<T> {
  /** Users with at least one waiter. */
  readonly size: number
  /**
   * Registers a waiter for `userId` before returning (so a change found from now on reaches it)
   * and resolves when woken (`advanced`), after `timeoutMs` (`timeout`) or on abort (`aborted`).
   */
  wait(userId: string, data: T, timeoutMs: number, signal: AbortSignal): Promise<WaitOutcome>
  /** Wakes the waiters of `userId` whose data passes `which` (all when absent). */
  wake(userId: string, which?: (data: T) => boolean): void
}

/**
 * The waiter bookkeeping shared by the long-poll watches (membership-watch.ts,
 * user-data-watch.ts). `onEmpty` runs when the last waiter leaves.
 *
 * @example
 * const waiters = createUserWaiters<bigint>({ onEmpty: () => stopPolling() })
 * const outcome = waiters.wait('@a:hs', 41n, 30_000, signal) // registered now
 * waiters.wake('@a:hs', (after) => 42n > after)
 */
export function createUserWaiters<T>(options: { onEmpty?: () => void } = {}): UserWaiters<T> {
  const byUser = new Map<string, Set<{ data: T; wake: () => void }>>()
  return {
    get size() {
      return byUser.size
    },
    wait(userId, data, timeoutMs, signal) {
      if (signal.aborted) return Promise.resolve('aborted')
      return new Promise((resolve) => {
        const waiter = { data, wake: () => done('advanced') }
        const done = (outcome: WaitOutcome) => {
          clearTimeout(timer)
          signal.removeEventListener('abort', onAbort)
          const mine = byUser.get(userId)
          if (mine?.delete(waiter) && mine.size === 0) {
            byUser.delete(userId)
            if (byUser.size === 0) options.onEmpty?.()
          }
          resolve(outcome)
        }
        const onAbort = () => done('aborted')
        const timer = setTimeout(() => done('timeout'), Math.max(0, timeoutMs))
        signal.addEventListener('abort', onAbort, { once: true })
        const mine = byUser.get(userId) ?? new Set()
        mine.add(waiter)
        byUser.set(userId, mine)
      })
    },
    wake(userId, which) {
      for (const waiter of byUser.get(userId) ?? []) if (which === undefined || which(waiter.data)) waiter.wake()
    },
  }
}
