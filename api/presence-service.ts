import type { Kysely } from 'kysely'
import type { Logger } from '../storage/logger.js'
import { presenceOf, updatePresence, type PresenceState, type PresenceStatus } from '../storage/presence.js'
import type { Database } from '../storage/schema.js'
import { createTtlCache } from './ttl-cache.js'

export type { PresenceState, PresenceStatus }

/**
 * Presence as an api process serves it, over the deployment's shared presence
 * (storage/presence.ts). With `enabled` false (config `presence.enabled`, as operators of large
 * deployments choose to save its writes), updates are accepted and dropped, everyone reads as
 * offline, and /sync shows none.
 *
 * The frequent updates, a user's syncs and sends, are written at most once per `refreshMs`
 * (default 15 s) per user and kind from each process: a connection lasts 30 s past its sync, so
 * that is enough to keep the user connected, and a change of state is still written at once.
 * The same update asked again while it is being written joins it rather than queueing another
 * (a user's concurrent sends would otherwise each write, one after another, under the stream's
 * lock when the state changes).
 */
export interface PresenceService {
  readonly enabled: boolean
  /** `userId`'s presence as `observer` may see it (undefined: they share no room). */
  statusOf(userId: string, observer: string): Promise<PresenceStatus | undefined>
  /** PUT /presence/{userId}/status. */
  set(userId: string, state: PresenceState, statusMsg?: string): Promise<void>
  /** A /sync with `set_presence` (absent: `online`) that may wait `timeoutMs`. Never rejects. */
  syncing(userId: string, setPresence: PresenceState | undefined, timeoutMs: number): Promise<void>
  /** The user sent an event. Written in the background; never rejects. */
  active(userId: string): void
}

/**
 * @example
 * const presence = createPresenceService({ db, log, clock: Date.now, enabled: true })
 * await presence.syncing('@alice:hs', undefined, 30_000)
 * await presence.statusOf('@alice:hs', '@alice:hs') // { presence: 'online', last_active_ago: 0, currently_active: true }
 */
export function createPresenceService(options: { db: Kysely<Database>; log: Logger; clock: () => number; enabled: boolean; refreshMs?: number }): PresenceService {
  const { db, clock, enabled } = options
  const log = options.log.child({ component: 'presence' })
  /** What this process wrote lately, by `<kind> <user>`: the state asked for. */
  const recent = createTtlCache<PresenceState>({ ttlMs: options.refreshMs ?? 15_000, maxEntries: 100_000, clock })
  /** The update of each `<kind> <user>` under way: the same one asked again meanwhile joins it. */
  const running = new Map<string, { asked: PresenceState; done: Promise<void> }>()
  const update = (key: string, userId: string, asked: PresenceState, run: () => Promise<unknown>): Promise<void> => {
    if (recent.get(key) === asked) return Promise.resolve()
    const current = running.get(key)
    if (current?.asked === asked) return current.done
    const entry = { asked, done: Promise.resolve() }
    running.set(key, entry)
    entry.done = (async () => {
      try {
        await run()
        recent.set(key, asked)
      } catch (err) {
        log.warn({ err, userId }, 'could not update presence')
      } finally {
        if (running.get(key) === entry) running.delete(key)
      }
    })()
    return entry.done
  }
  return {
    enabled,
    async statusOf(userId, observer) {
      if (!enabled) return { presence: 'offline' }
      return presenceOf(db, userId, observer, clock())
    },
    async set(userId, state, statusMsg) {
      if (!enabled) return
      await updatePresence(db, userId, { kind: 'set', state, ...(statusMsg !== undefined && { statusMsg }) }, clock())
      // The user's next sync or send may change the state again (offline → online).
      recent.delete(`sync ${userId}`)
      recent.delete(`active ${userId}`)
    },
    async syncing(userId, setPresence = 'online', timeoutMs) {
      if (!enabled || setPresence === 'offline') return
      const now = clock()
      await update(`sync ${userId}`, userId, setPresence, () => updatePresence(db, userId, { kind: 'sync', state: setPresence, connectedUntil: now + timeoutMs }, now))
    },
    active(userId) {
      if (!enabled) return
      const now = clock()
      void update(`active ${userId}`, userId, 'online', () => updatePresence(db, userId, { kind: 'active' }, now))
    },
  }
}
