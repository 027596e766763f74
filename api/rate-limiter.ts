/**
 * Token buckets keyed by string (a user ID, an IP address), in process memory. Each key holds up
 * to `burst` tokens and regains `perSecond` per second; an action costs one. Keys whose bucket is
 * full again are dropped, so memory follows the number of recently limited keys.
 * Per process: N api workers allow N times the rate (acceptable for brute-force damping).
 */
export interface RateLimiter {
  /** 0 when `key` may act now, else the milliseconds until it may. Does not consume. `limit` replaces the limiter's own for this key. */
  retryAfterMs(key: string, limit?: RateLimit): number
  /** Consumes one token of `key` (under `limit` when given). */
  record(key: string, limit?: RateLimit): void
}

/** A bucket's size and refill rate. */
export interface RateLimit {
  readonly burst: number
  readonly perSecond: number
}

/**
 * @example
 * const limiter = createRateLimiter({ burst: 5, perSecond: 0.2 })
 * if (limiter.retryAfterMs(userId) > 0) throw limitExceeded(limiter.retryAfterMs(userId))
 * if (!passwordOk) limiter.record(userId)
 */
export function createRateLimiter(options: RateLimit & { clock?: () => number }): RateLimiter {
  const clock = options.clock ?? Date.now
  const buckets = new Map<string, { tokens: number; at: number }>()

  function level(key: string, limit: RateLimit): number {
    const bucket = buckets.get(key)
    if (!bucket) return limit.burst
    const tokens = Math.min(limit.burst, bucket.tokens + ((clock() - bucket.at) / 1000) * limit.perSecond)
    if (tokens >= limit.burst) buckets.delete(key)
    return tokens
  }

  return {
    retryAfterMs(key, limit = options) {
      const tokens = level(key, limit)
      return tokens >= 1 ? 0 : Math.ceil(((1 - tokens) / limit.perSecond) * 1000)
    },
    record(key, limit = options) {
      buckets.set(key, { tokens: Math.max(0, level(key, limit) - 1), at: clock() })
    },
  }
}
