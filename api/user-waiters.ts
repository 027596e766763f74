/** How a wait ended. */
export type WaitOutcome = 'advanced' | 'timeout' | 'aborted'

/** Long-poll waiters keyed by user (or room), each with data of its own (the position it waits after). */
export interface UserWaiters<T> {
  /** Keys with at least one waiter. */
  readonly size: number
  /**
   * Registers a waiter under `keys` (a user ID, or several room IDs) before returning (so a
   * change found from now on reaches it) and resolves when woken through any of them
   * (`advanced`), after `timeoutMs` (`timeout`) or on abort (`aborted`).
   */
  wait(keys: string | readonly string[], data: T, timeoutMs: number, signal: AbortSignal): Promise<WaitOutcome>
  /** Wakes the waiters of `key` whose data passes `which` (all when absent). */
  wake(key: string, which?: (data: T) => boolean): void
}

/**
 * The waiter bookkeeping shared by the long-poll watches (membership-watch.ts,
 * position-watch.ts). `onEmpty` runs when the last waiter leaves.
 *
 * @example
 * const waiters = createUserWaiters<bigint>({ onEmpty: () => stopPolling() })
 * const outcome = waiters.wait('@a:hs', 41n, 30_000, signal) // registered now
 * waiters.wake('@a:hs', (after) => 42n > after)
 */
export function createUserWaiters<T>(options: { onEmpty?: () => void } = {}): UserWaiters<T> {
  const byKey = new Map<string, Set<{ data: T; wake: () => void }>>()
  return {
    get size() {
      return byKey.size
    },
    wait(keys, data, timeoutMs, signal) {
      if (signal.aborted) return Promise.resolve('aborted')
      const list = typeof keys === 'string' ? [keys] : [...new Set(keys)]
      return new Promise((resolve) => {
        const waiter = { data, wake: () => done('advanced') }
        const done = (outcome: WaitOutcome) => {
          clearTimeout(timer)
          signal.removeEventListener('abort', onAbort)
          let emptied = false
          for (const key of list) {
            const mine = byKey.get(key)
            if (mine?.delete(waiter) && mine.size === 0) emptied = byKey.delete(key)
          }
          if (emptied && byKey.size === 0) options.onEmpty?.()
          resolve(outcome)
        }
        const onAbort = () => done('aborted')
        const timer = setTimeout(() => done('timeout'), Math.max(0, timeoutMs))
        signal.addEventListener('abort', onAbort, { once: true })
        for (const key of list) {
          const mine = byKey.get(key) ?? new Set()
          mine.add(waiter)
          byKey.set(key, mine)
        }
      })
    },
    wake(key, which) {
      for (const waiter of byKey.get(key) ?? []) if (which === undefined || which(waiter.data)) waiter.wake()
    },
  }
}
