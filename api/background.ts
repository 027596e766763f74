import { Gauge, type Registry, Counter } from 'prom-client'
import type { Kysely } from 'kysely'
import type { Logger } from '../storage/logger.js'
import type { Database } from '../storage/schema.js'
import { expirePresence, idlePresence } from '../storage/presence.js'
import { expireTyping } from '../storage/typing.js'

/** Client txn IDs are kept a day (Synapse keeps them 24 h: a retry after that is a new send). */
export const txnIdLifetimeMs = 24 * 60 * 60 * 1000
/** Replication request answers are kept an hour (callers retry within seconds). */
export const replicationRequestLifetimeMs = 60 * 60 * 1000
/** Token revocations are read by the caches within seconds; an hour is plenty. */
export const tokenRevocationLifetimeMs = 60 * 60 * 1000
/** Interval between housekeeping runs. */
export const housekeepingIntervalMs = 60 * 1000
/** Interval between sweeps for typing timeouts and presence connections that ran out (storage/typing.ts, storage/presence.ts). */
export const typingSweepIntervalMs = 1000

export interface BackgroundTasks {
  /** Runs every task once now (tests, and the first run at start). Returns rows deleted per task. */
  runOnce(): Promise<{ txnIds: number; replicationRequests: number }>
  /** Runs the sweep once now; returns how many users stopped typing, went offline and went idle. */
  sweep(): Promise<{ typing: number; offline: number; idle: number }>
  close(): Promise<void>
}

/**
 * The housekeeping of a deployment, run by exactly one process (`run_background_tasks_on`):
 * expires client txn IDs (of sends and of to-device messages) and replication request answers, and publishes room and event counts
 * (every `intervalMs`); stops the typing of users whose timeout ran out, and sets users whose
 * presence connection ran out offline, and online users idle for 5 minutes unavailable (every
 * `typingSweepMs`). A failed run is logged and
 * retried at the next interval.
 *
 * @example
 * const tasks = startBackgroundTasks({ db, log, registry })
 * await tasks.close()
 */
export function startBackgroundTasks(options: {
  db: Kysely<Database>
  log: Logger
  registry?: Registry
  clock?: () => number
  intervalMs?: number
  typingSweepMs?: number
}): BackgroundTasks {
  const { db } = options
  const log = options.log.child({ component: 'background' })
  const clock = options.clock ?? Date.now
  const registers = options.registry ? [options.registry] : []
  const expired = new Counter({ name: 'myelin_background_expired_rows_total', help: 'Rows deleted by housekeeping, by table', labelNames: ['table'], registers })
  const rooms = new Gauge({ name: 'myelin_rooms', help: 'Rooms known to the deployment (at the last housekeeping run)', registers })
  const typingStopped = new Counter({ name: 'myelin_typing_timeouts_total', help: 'Typing users stopped because their timeout ran out', registers })
  const wentOffline = new Counter({ name: 'myelin_presence_timeouts_total', help: 'Users set offline because no sync or presence update kept them connected', registers })
  const wentIdle = new Counter({ name: 'myelin_presence_idle_total', help: 'Online users set unavailable after 5 minutes without activity', registers })

  async function runOnce() {
    const now = clock()
    const txn = await db.deleteFrom('event_txn_ids').where('inserted_ts', '<', BigInt(now - txnIdLifetimeMs)).executeTakeFirst()
    const requests = await db.deleteFrom('replication_requests').where('inserted_ts', '<', BigInt(now - replicationRequestLifetimeMs)).executeTakeFirst()
    const revocations = await db.deleteFrom('access_token_revocations').where('revoked_ts', '<', BigInt(now - tokenRevocationLifetimeMs)).executeTakeFirst()
    const toDeviceTxns = await db.deleteFrom('to_device_txns').where('inserted_ts', '<', BigInt(now - txnIdLifetimeMs)).executeTakeFirst()
    const counts = {
      txnIds: Number(txn.numDeletedRows),
      replicationRequests: Number(requests.numDeletedRows),
      tokenRevocations: Number(revocations.numDeletedRows),
      toDeviceTxns: Number(toDeviceTxns.numDeletedRows),
    }
    expired.inc({ table: 'event_txn_ids' }, counts.txnIds)
    expired.inc({ table: 'replication_requests' }, counts.replicationRequests)
    expired.inc({ table: 'access_token_revocations' }, counts.tokenRevocations)
    expired.inc({ table: 'to_device_txns' }, counts.toDeviceTxns)
    const { n } = await db.selectFrom('rooms').select((eb) => eb.fn.countAll<bigint>().as('n')).executeTakeFirstOrThrow()
    rooms.set(Number(n))
    log.debug(counts, 'housekeeping done')
    return counts
  }

  async function sweep() {
    const now = clock()
    const [typing, offline] = await Promise.all([expireTyping(db, now), expirePresence(db, now)])
    // After the offline ones: a user gone is offline, not idle.
    const idle = await idlePresence(db, now)
    typingStopped.inc(typing)
    wentOffline.inc(offline)
    wentIdle.inc(idle)
    return { typing, offline, idle }
  }

  let running: Promise<unknown> = Promise.resolve()
  const tick = () => {
    running = runOnce().catch((err: unknown) => log.warn({ err }, 'housekeeping failed; retrying at the next interval'))
  }
  let sweeping: Promise<unknown> | undefined
  const sweepTick = () => {
    // One sweep at a time: while the database is slow or down, ticks are skipped, not queued.
    sweeping ??= sweep()
      .catch((err: unknown) => log.warn({ err }, 'typing and presence sweep failed; retrying at the next interval'))
      .finally(() => (sweeping = undefined))
  }
  const timers = [setInterval(tick, options.intervalMs ?? housekeepingIntervalMs), setInterval(sweepTick, options.typingSweepMs ?? typingSweepIntervalMs)]
  for (const timer of timers) timer.unref()
  tick()
  return {
    runOnce,
    sweep,
    async close() {
      for (const timer of timers) clearInterval(timer)
      await Promise.all([running, sweeping])
    },
  }
}
