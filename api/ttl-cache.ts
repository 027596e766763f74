/**
 * A bounded in-process cache whose entries expire `ttlMs` after they were set. When full, the
 * entry set longest ago goes first.
 */
export interface TtlCache<V> {
  readonly size: number
  /** The value of `key`, or undefined when absent or expired (an expired entry is dropped). */
  get(key: string): V | undefined
  /** Sets `key` with a fresh lifetime; it becomes the newest entry. */
  set(key: string, value: V): void
  /** Drops `key`. */
  delete(key: string): void
  /** Drops every entry whose value matches. */
  deleteWhere(matches: (value: V) => boolean): void
}

/**
 * @example
 * const cache = createTtlCache<Requester>({ ttlMs: 30_000, maxEntries: 10_000, clock: Date.now })
 * cache.set(tokenHash, requester)
 * cache.get(tokenHash) // requester, for 30 s
 */
export function createTtlCache<V>(options: { ttlMs: number; maxEntries: number; clock: () => number }): TtlCache<V> {
  const entries = new Map<string, { value: V; expiresAt: number }>()
  return {
    get size() {
      return entries.size
    },
    get(key) {
      const entry = entries.get(key)
      if (entry === undefined) return undefined
      if (entry.expiresAt > options.clock()) return entry.value
      entries.delete(key)
      return undefined
    },
    set(key, value) {
      entries.delete(key)
      if (entries.size >= options.maxEntries) {
        const oldest = entries.keys().next()
        if (!oldest.done) entries.delete(oldest.value)
      }
      entries.set(key, { value, expiresAt: options.clock() + options.ttlMs })
    },
    delete(key) {
      entries.delete(key)
    },
    deleteWhere(matches) {
      for (const [key, { value }] of entries) if (matches(value)) entries.delete(key)
    },
  }
}
