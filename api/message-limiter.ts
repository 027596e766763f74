import { Counter, type Registry } from 'prom-client'
import type { Kysely } from 'kysely'
import { getRatelimitOverride, type RatelimitOverride } from '../storage/ratelimit-overrides.js'
import type { Database } from '../storage/schema.js'
import { limitExceeded } from './errors.js'
import { createRateLimiter, type RateLimit } from './rate-limiter.js'
import { createTtlCache } from './ttl-cache.js'

/**
 * Synapse's `rc_message`: the events a user sends through the client API (messages, state,
 * redactions) are limited to `per_second`, in bursts of `burst_count`, in each process that
 * serves their sends (as Synapse's workers, each counts its own). A user's override from the
 * admin API (`override_ratelimit`) replaces the configured limit; 0 and 0 mean none. Overrides
 * are cached for `overrideTtlMs`: a change reaches the process that made it at once, the others
 * within that time.
 */
export interface MessageLimiter {
  /** Counts one send of `userId`, or throws 429 `M_LIMIT_EXCEEDED` with `retry_after_ms`. */
  take(userId: string): Promise<void>
  /** Drops the user's cached override (after this process changed it). */
  forget(userId: string): void
}

/** How long a user's override (or its absence) is cached. */
const overrideTtlMs = 10_000

/**
 * @example
 * const limiter = createMessageLimiter({ db, limit: config.rc_message, clock: Date.now })
 * await limiter.take(userId) // throws M_LIMIT_EXCEEDED past the limit
 */
export function createMessageLimiter(options: {
  db: Kysely<Database>
  limit: { readonly per_second: number; readonly burst_count: number }
  clock: () => number
  registry?: Registry
}): MessageLimiter {
  const configured = asLimit({ messages_per_second: options.limit.per_second, burst_count: options.limit.burst_count })
  const buckets = createRateLimiter({ ...(configured ?? { burst: 1, perSecond: 1 }), clock: options.clock })
  const overrides = createTtlCache<RatelimitOverride | null>({ ttlMs: overrideTtlMs, maxEntries: 100_000, clock: options.clock })
  const refused =
    (options.registry?.getSingleMetric('myelin_ratelimited_total') as Counter | undefined) ??
    new Counter({ name: 'myelin_ratelimited_total', help: 'Client sends refused with M_LIMIT_EXCEEDED by the message rate limit', registers: options.registry ? [options.registry] : [] })

  async function limitOf(userId: string): Promise<RateLimit | undefined> {
    let override = overrides.get(userId)
    if (override === undefined) {
      override = (await getRatelimitOverride(options.db, userId)) ?? null
      overrides.set(userId, override)
    }
    return override === null ? configured : asLimit(override)
  }

  return {
    async take(userId) {
      const limit = await limitOf(userId)
      if (limit === undefined) return
      const wait = buckets.retryAfterMs(userId, limit)
      if (wait > 0) {
        refused.inc()
        throw limitExceeded(wait)
      }
      buckets.record(userId, limit)
    },
    forget(userId) {
      overrides.delete(userId)
    },
  }
}

/** A limit as the buckets take it; undefined for no limit (a rate of 0, as Synapse's 0/0 override and `per_second: 0`). */
function asLimit(override: RatelimitOverride): RateLimit | undefined {
  if (override.messages_per_second <= 0) return undefined
  return { perSecond: override.messages_per_second, burst: Math.max(1, override.burst_count) }
}
