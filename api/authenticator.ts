import type { Kysely } from 'kysely'
import { hashAccessToken, passesTokenCheck } from '../storage/access-token.js'
import { findAccessToken, recentlyRevokedTokenIds, type Requester } from '../storage/accounts.js'
import type { Database } from '../storage/schema.js'
import { createTtlCache } from './ttl-cache.js'

/**
 * Resolves access tokens to requesters, with a small in-process cache keyed by the token's
 * SHA-256 (never the token itself).
 *
 * Staleness: a logout, device deletion or password change made through THIS process forgets the
 * affected entries at once. Other processes learn of it from `access_token_revocations` (filled by
 * triggers), which every authenticator with cached tokens polls every `revocationPollMs`
 * (default 500 ms): a revoked token stops working everywhere within about a second. If the
 * poll fails, entries still expire after `ttlMs` (default 30 s).
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
  /** How often cached tokens are checked against recent revocations (default 500 ms; 0: never). */
  readonly revocationPollMs?: number
  /** Logs a failed revocation poll. */
  readonly onPollError?: (err: unknown) => void
}

/** How far back each revocation poll looks (database clock): several polls overlap. */
const revocationLookbackMs = 5_000

/**
 * @example
 * const auth = createAuthenticator({ db })
 * const requester = await auth.authenticate(token) // { userId, deviceId, tokenId } | undefined
 * auth.forget({ tokenId: requester.tokenId }) // after deleting the token
 */
export function createAuthenticator(options: AuthenticatorOptions): Authenticator {
  const ttlMs = options.ttlMs ?? 30_000
  const cache = createTtlCache<Requester>({ ttlMs, maxEntries: options.maxEntries ?? 10_000, clock: options.clock ?? Date.now })
  const pollMs = options.revocationPollMs ?? 500
  let poller: NodeJS.Timeout | undefined

  /** Drops cached tokens revoked recently; runs while anything is cached. */
  async function pollRevocations(): Promise<void> {
    poller = undefined
    if (cache.size === 0) return
    try {
      const revoked = new Set(await recentlyRevokedTokenIds(options.db, revocationLookbackMs))
      if (revoked.size > 0) cache.deleteWhere((requester) => revoked.has(requester.tokenId))
    } catch (err) {
      options.onPollError?.(err)
    }
    schedulePoll()
  }

  function schedulePoll(): void {
    if (pollMs <= 0 || poller !== undefined || cache.size === 0) return
    poller = setTimeout(() => void pollRevocations(), pollMs)
    poller.unref()
  }

  return {
    async authenticate(token) {
      if (!passesTokenCheck(token)) return undefined
      const hash = hashAccessToken(token)
      const key = hash.toString('base64')
      const cached = cache.get(key)
      if (cached) return cached
      const requester = await findAccessToken(options.db, hash)
      if (requester && ttlMs > 0) {
        cache.set(key, requester)
        schedulePoll()
      }
      return requester
    },
    forget(which) {
      cache.deleteWhere((requester) =>
        'tokenId' in which
          ? requester.tokenId === which.tokenId
          : requester.userId === which.userId && (which.deviceIds === undefined || which.deviceIds.includes(requester.deviceId)),
      )
    },
  }
}
