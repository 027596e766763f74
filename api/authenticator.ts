import type { Kysely } from 'kysely'
import { hashAccessToken, passesTokenCheck } from '../storage/access-token.js'
import { findAccessToken, type Requester } from '../storage/accounts.js'
import type { Database } from '../storage/schema.js'

/**
 * Resolves access tokens to requesters, with a small in-process cache keyed by the token's
 * SHA-256 (never the token itself).
 *
 * Staleness: a logout, device deletion or password change made through THIS process forgets the
 * affected entries at once. Another process keeps serving a revoked token from its cache for at
 * most `ttlMs` (default 30 s); deployments that cannot accept that set a smaller TTL.
 * Unknown tokens are not cached (each costs one indexed lookup; a `syt_` token with a wrong check
 * part costs none).
 */
export interface Authenticator {
  /** The requester of `token`, or undefined when the token is unknown or revoked. */
  authenticate(token: string): Promise<Requester | undefined>
  /** Forgets cached tokens matching `which` (after revoking them in the database). */
  forget(which: { tokenId: bigint } | { userId: string; deviceIds?: readonly string[] }): void
}

export interface AuthenticatorOptions {
  readonly db: Kysely<Database>
  /** Cache lifetime of a resolved token (default 30 000 ms; 0 disables the cache). */
  readonly ttlMs?: number
  /** Most cached tokens; the oldest entries go first (default 10 000). */
  readonly maxEntries?: number
  readonly clock?: () => number
}

interface Entry {
  readonly requester: Requester
  readonly expiresAt: number
}

/**
 * @example
 * const auth = createAuthenticator({ db })
 * const requester = await auth.authenticate(token) // { userId, deviceId, tokenId } | undefined
 * auth.forget({ tokenId: requester.tokenId }) // after deleting the token
 */
export function createAuthenticator(options: AuthenticatorOptions): Authenticator {
  const ttlMs = options.ttlMs ?? 30_000
  const maxEntries = options.maxEntries ?? 10_000
  const clock = options.clock ?? Date.now
  const cache = new Map<string, Entry>()

  return {
    async authenticate(token) {
      if (!passesTokenCheck(token)) return undefined
      const hash = hashAccessToken(token)
      const key = hash.toString('base64')
      const cached = cache.get(key)
      if (cached) {
        if (cached.expiresAt > clock()) return cached.requester
        cache.delete(key)
      }
      const requester = await findAccessToken(options.db, hash)
      if (requester && ttlMs > 0) {
        if (cache.size >= maxEntries) {
          const oldest = cache.keys().next()
          if (!oldest.done) cache.delete(oldest.value)
        }
        cache.set(key, { requester, expiresAt: clock() + ttlMs })
      }
      return requester
    },
    forget(which) {
      for (const [key, { requester }] of cache) {
        const matches =
          'tokenId' in which
            ? requester.tokenId === which.tokenId
            : requester.userId === which.userId && (which.deviceIds === undefined || which.deviceIds.includes(requester.deviceId))
        if (matches) cache.delete(key)
      }
    },
  }
}
