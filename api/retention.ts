import { Counter, type Registry } from 'prom-client'
import type { Kysely } from 'kysely'
import { randomAlphanumeric } from '../storage/access-token.js'
import type { MyelinConfig } from '../storage/config.js'
import { forgetHistoryPurge, hasEventsBelow, purgeDepth, retentionPolicies, roomIds, runHistoryPurge, startHistoryPurge } from '../storage/history-purge.js'
import type { Logger } from '../storage/logger.js'
import type { Database } from '../storage/schema.js'

/** Events deleted by history purges, the admin API's and retention's (one counter per registry). */
export function purgedEventsCounter(registry: Registry | undefined): Counter {
  return (
    (registry?.getSingleMetric('myelin_history_purged_events_total') as Counter | undefined) ??
    new Counter({ name: 'myelin_history_purged_events_total', help: 'Events deleted by history purges (admin purge_history and retention)', registers: registry ? [registry] : [] })
  )
}

export interface Retention {
  /** One pass over the rooms now; how many rooms it purged and how many events it deleted. */
  runOnce(): Promise<{ rooms: number; deleted: number }>
  close(): Promise<void>
}

/**
 * Message retention, on the background process (Synapse's `retention` purge jobs): every
 * `purge_interval_ms`, each room with a lifetime (its `m.room.retention` `max_lifetime`, clamped
 * to `allowed_lifetime_min_ms`..`allowed_lifetime_max_ms`, else `default_max_lifetime_ms` as is) has
 * the events sent before `now - lifetime` purged, this server's users' included, as a history
 * purge does (storage/history-purge.ts: state events and the latest event stay). Each room's
 * purge is recorded while it runs, so one cut short by a shutdown is finished by an api worker's
 * resume (api/routes/admin-history.ts), and forgotten once complete. A failed pass is logged and
 * tried again at the next interval. Meanwhile reads hide what a lifetime expired
 * (storage/room-reads.ts `isVisible`, from the rule api/process.ts puts in `retention_settings`).
 *
 * @example
 * const retention = startRetention({ db, log, config: config.retention, serverName: config.server_name })
 * await retention.close()
 */
export function startRetention(options: {
  db: Kysely<Database>
  log: Logger
  config: MyelinConfig['retention']
  serverName: string
  registry?: Registry
  clock?: () => number
}): Retention {
  const { db, config } = options
  const log = options.log.child({ component: 'retention' })
  const clock = options.clock ?? Date.now
  const purged = purgedEventsCounter(options.registry)
  let closing = false
  let running: Promise<unknown> = Promise.resolve()

  // A room's own policy is held to the allowed bounds; the server's default is taken as it is.
  const lifetimeOf = (policy: number | undefined): number | undefined =>
    policy === undefined ? config.default_max_lifetime_ms : Math.min(Math.max(policy, config.allowed_lifetime_min_ms ?? policy), config.allowed_lifetime_max_ms ?? policy)

  async function pass(): Promise<{ rooms: number; deleted: number }> {
    const policies = await retentionPolicies(db)
    const rooms = config.default_max_lifetime_ms === undefined ? [...policies.keys()] : await roomIds(db)
    let purgedRooms = 0
    let deleted = 0
    for (const roomId of rooms) {
      if (closing) break
      const lifetime = lifetimeOf(policies.get(roomId))
      if (lifetime === undefined) continue
      const upToDepth = await purgeDepth(db, roomId, { ts: clock() - lifetime })
      if (upToDepth === undefined || !(await hasEventsBelow(db, roomId, upToDepth))) continue
      const purgeId = `retention-${randomAlphanumeric(12)}`
      await startHistoryPurge(db, { purgeId, roomId, upToDepth, deleteLocalEvents: true, now: clock() })
      let roomDeleted = 0
      await runHistoryPurge(db, purgeId, {
        localServer: options.serverName,
        shouldStop: () => closing,
        onChunk: (n) => {
          roomDeleted += n
          purged.inc(n)
        },
      })
      await forgetHistoryPurge(db, purgeId)
      if (roomDeleted > 0) {
        purgedRooms++
        deleted += roomDeleted
        log.info({ roomId, lifetimeMs: lifetime, deleted: roomDeleted }, 'retention purged expired events')
      }
    }
    return { rooms: purgedRooms, deleted }
  }

  const runOnce = () => {
    const run = running.then(pass)
    running = run.catch(() => undefined)
    return run
  }
  const tick = () => {
    runOnce().catch((err: unknown) => log.warn({ err }, 'retention pass failed; it runs again at the next interval'))
  }
  const timer = config.enabled ? setInterval(tick, config.purge_interval_ms) : undefined
  timer?.unref()
  if (config.enabled) setImmediate(tick)
  return {
    runOnce,
    async close() {
      closing = true
      clearInterval(timer)
      await running
    },
  }
}
