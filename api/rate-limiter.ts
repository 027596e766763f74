/**
 * Token buckets keyed by string (a user ID, an IP address), in process memory. Each key holds up
 * to `burst` tokens and regains `perSecond` per second; an action costs one. Keys whose bucket is
 * full again are dropped, so memory follows the number of recently limited keys.
 * Per process: N api workers allow N times the rate (acceptable for brute-force damping).
 */
export interface RateLimiter {
  /** 0 when `key` may act now, else the milliseconds until it may. Does not consume. */
  retryAfterMs(key: string): number
  /** Consumes one token of `key`. */
  record(key: string): void
}

/**
 * @example
 * const limiter = createRateLimiter({ burst: 5, perSecond: 0.2 })
 * if (limiter.retryAfterMs(userId) > 0) throw limitExceeded(limiter.retryAfterMs(userId))
 * if (!passwordOk) limiter.record(userId)
 */
export function createRateLimiter(options: { burst: number; perSecond: number; clock?: () => number }): RateLimiter {
  const clock = options.clock ?? Date.now
  const buckets = new Map<string, { tokens: number; at: number }>()

  function level(key: string): number {
    const bucket = buckets.get(key)
    if (!bucket) return options.burst
    const tokens = Math.min(options.burst, bucket.tokens + ((clock() - bucket.at) / 1000) * options.perSecond)
    if (tokens >= options.burst) buckets.delete(key)
    return tokens
  }

  return {
    retryAfterMs(key) {
      const tokens = level(key)
      return tokens >= 1 ? 0 : Math.ceil(((1 - tokens) / options.perSecond) * 1000)
    },
    record(key) {
      buckets.set(key, { tokens: Math.max(0, level(key) - 1), at: clock() })
    },
  }
}
