import { Counter, Gauge, type Registry } from 'prom-client'
import type { Kysely } from 'kysely'
import { lookup as dnsLookup, type LookupAddress } from 'node:dns'
import { BlockList, isIP, type LookupFunction } from 'node:net'
import { Agent, request } from 'undici'
import type { MyelinConfig } from '../storage/config.js'
import type { Logger } from '../storage/logger.js'
import { evaluatePushRules, type PushOutcome } from '../storage/push-evaluator.js'
import { pushRulesOf } from '../storage/push-rules.js'
import { contextIn, deletedPushers, pushCandidates, receiptReaders, pushContext, recordPusherProgress, storedPushers, type PushCandidate, type PushRoom, type StoredPusher } from '../storage/pushers.js'
import type { Database } from '../storage/schema.js'
import { RoomStreamToken } from '../storage/streams/room-stream-token.js'
import type { StreamTracker } from '../storage/streams/stream-tracker.js'
import { unreadRoomCount } from '../storage/unread-counts.js'
import { spacedPasses } from './spaced-passes.js'

/**
 * Sends push notifications to push gateways (push gateway API v1, `POST /_matrix/push/v1/notify`),
 * as Synapse's pusher does, on the process that runs the background tasks.
 *
 * - It follows the events stream up to the tracker's linear position (every event at or below it
 *   is committed), woken by the tracker's advances. For the users with pushers, it evaluates their
 *   push rules (storage/push-evaluator.ts) on the events of rooms they are joined to or invited
 *   into, and sends each notifying event to each of their pushers, in stream order.
 * - Each pusher's position is stored after each notification its gateway takes: a restart
 *   resumes there, so a notification is sent once (again only if the gateway took it and the
 *   process died before recording it: at most one per pusher).
 * - A gateway that fails (no answer within `timeout_ms`, a status other than 2xx) is tried again
 *   after `retry_initial_ms`, doubling up to `retry_max_ms`; other pushers go on meanwhile. A
 *   notification it has refused for `give_up_after_ms` is dropped. Pushkeys the gateway names in
 *   `rejected` lose their pusher.
 * - Gateways resolving to an address in `ip_range_blocklist` (private ranges by default, as
 *   Synapse) are not contacted: the check is made on the addresses the connection uses, so a
 *   name cannot resolve to an allowed address for the check and a blocked one for the request.
 * - `counts.unread` (the badge) is the number of the user's rooms with unread notifications
 *   (storage/unread-counts.ts `unreadRoomCount`), read once per user and batch.
 */

export interface PushSender {
  /**
   * Handles what the stream holds now for every pusher that is due; resolves when done,
   * deliveries included (but not the retries of failed ones, which go on on their own).
   */
  runOnce(): Promise<void>
  close(): Promise<void>
}

/** Events read per pass. */
const batchSize = 1000
/** How often the pushers are read again (new ones, deleted ones); `runOnce` reads them at once. */
const pusherRefreshMs = 5000
/** Least time between the starts of two passes: advances come per transaction, passes read every pusher. */
const passSpacingMs = 100

interface Backoff {
  readonly retryAt: number
  readonly waitMs: number
}

export function startPushSender(options: {
  db: Kysely<Database>
  tracker: Pick<StreamTracker, 'linearPosition' | 'onAdvance'>
  log: Logger
  config: MyelinConfig['push']
  registry?: Registry
  clock?: () => number
}): PushSender {
  const { db, tracker, config } = options
  const clock = options.clock ?? Date.now
  const log = options.log.child({ component: 'push-sender' })
  const registers = options.registry ? [options.registry] : []
  const sent = new Counter({ name: 'myelin_push_notifications_total', help: 'Push notifications by outcome (sent, failed attempts, dropped after giving up)', labelNames: ['outcome'], registers })
  const rejected = new Counter({ name: 'myelin_push_rejected_pushers_total', help: 'Pushers removed because their gateway rejected the pushkey', registers })
  const lag = new Gauge({ name: 'myelin_push_position_lag', help: 'Events stream IDs between the slowest pusher and the stream', registers })

  const blocked = blockListOf(config.ip_range_blocklist)
  const agent = new Agent({ connect: { lookup: guardedLookup(blocked) } })
  const backoffs = new Map<bigint, Backoff>()
  /** Deliveries under way, by pusher. */
  const delivering = new Map<bigint, Promise<void>>()
  /** Pushers whose delivery under way retries one that failed. */
  const retrying = new Set<bigint>()
  /** Badge updates under way. */
  const badgeSends = new Set<Promise<void>>()
  /** The receipts stream position badge updates have been sent up to (undefined: not read yet). */
  let receiptsSeen: bigint | undefined
  let closed = false
  let retryTimer: NodeJS.Timeout | undefined
  let refreshWanted = false

  /** The pushers as last read, by ID, with the positions this process recorded since. */
  let pushers = new Map<bigint, StoredPusher>()
  let pushersRead = Number.NEGATIVE_INFINITY

  /**
   * One pass: every due pusher from its position up to the linear position, a batch at a time.
   * Nothing is read while there is no pusher (but the pushers, every `pusherRefreshMs`).
   */
  async function pass(refresh: boolean): Promise<void> {
    const upTo = tracker.linearPosition()
    const now = clock()
    if (refresh || now - pushersRead >= pusherRefreshMs) {
      const stored = (await storedPushers(db)).filter((p) => p.kind === 'http')
      // A delivery may have recorded a position while the read ran: the later one stays.
      pushers = new Map(
        stored.map((p) => {
          const known = pushers.get(p.id)
          return [p.id, known !== undefined && known.lastStreamOrdering > p.lastStreamOrdering ? { ...p, lastStreamOrdering: known.lastStreamOrdering, failingSince: known.failingSince } : p]
        }),
      )
      pushersRead = now
    }
    if (pushers.size > 0) await sendBadgeUpdates(upTo)
    const behind = [...pushers.values()].filter((p) => p.lastStreamOrdering < upTo)
    lag.set(behind.length === 0 ? 0 : Number(upTo - behind.reduce((min, p) => (p.lastStreamOrdering < min ? p.lastStreamOrdering : min), upTo)))
    // A pusher still sending what an earlier pass gave it is left alone: a slow gateway holds up its own pushers only.
    const due = behind.filter((p) => !delivering.has(p.id) && (backoffs.get(p.id)?.retryAt ?? 0) <= now)
    if (due.length === 0) return
    const after = due.reduce((min, p) => (p.lastStreamOrdering < min ? p.lastStreamOrdering : min), upTo)
    // A full batch ends where it does; the next pass goes on from there.
    const { candidates, reached } = await pushCandidates(db, { after, upTo, limit: batchSize })
    const notifying = await evaluate(candidates, reached)
    // A pusher deleted since the pushers were read (a logout) gets nothing: checked when it has something to send.
    const sending = due.filter((p) => p.lastStreamOrdering < reached && notifying.some((n) => n.users.has(p.userId)))
    const gone = await deletedPushers(db, sending.map((p) => p.id))
    for (const id of gone) pushers.delete(id)
    for (const pusher of due) {
      if (pusher.lastStreamOrdering >= reached || gone.has(pusher.id)) continue
      if (backoffs.has(pusher.id)) retrying.add(pusher.id)
      const task = deliver(pusher, notifying.filter((n) => n.users.has(pusher.userId)), reached)
        .catch((err: unknown) => log.warn({ err, pusher: pusher.id }, 'push delivery failed; retried at the next pass'))
        .finally(() => {
          delivering.delete(pusher.id)
          retrying.delete(pusher.id)
          // What arrived meanwhile is this pusher's next batch.
          void wake()
        })
      delivering.set(pusher.id, task)
    }
    // The rest is the next pass's.
    if (reached < upTo) void passes.wake()
  }

  /** Records `pusher`'s progress here and in the database (never backwards). */
  async function record(pusher: StoredPusher, position: bigint, failingSince: number | undefined): Promise<void> {
    const current = pushers.get(pusher.id)
    if (current !== undefined) pushers.set(pusher.id, { ...current, lastStreamOrdering: position > current.lastStreamOrdering ? position : current.lastStreamOrdering, failingSince })
    await recordPusherProgress(db, pusher.id, position, failingSince)
  }

  interface Notifying {
    readonly candidate: PushCandidate
    readonly room: PushRoom
    readonly users: Map<string, PushOutcome>
    /** Each notified user's badge: rooms with unread notifications, as of the end of the batch. */
    readonly badges: ReadonlyMap<string, number>
  }

  async function evaluate(candidates: readonly PushCandidate[], reached: bigint): Promise<Notifying[]> {
    if (candidates.length === 0) return []
    const users = [...new Set(candidates.flatMap((c) => c.users))]
    const senders = candidates.map((c) => c.event['sender']).filter((s): s is string => typeof s === 'string')
    const [rooms, rules] = await Promise.all([pushContext(db, { rooms: [...new Set(candidates.map((c) => c.roomId))], members: [...new Set([...users, ...senders])] }), pushRulesOf(db, users)])
    const badges = new Map<string, number>()
    const notifying: Notifying[] = []
    for (const candidate of candidates) {
      const room = rooms.get(candidate.roomId)!
      const outcomes = new Map<string, PushOutcome>()
      for (const userId of candidate.users) {
        const outcome = evaluatePushRules(rules.get(userId)!, candidate.event, contextIn(room, userId))
        if (outcome.notify) outcomes.set(userId, outcome)
      }
      if (outcomes.size > 0) notifying.push({ candidate, room, users: outcomes, badges })
    }
    // One badge per notified user and batch (a statement over their rooms each).
    const notified = [...new Set(notifying.flatMap((n) => [...n.users.keys()]))]
    const upTo = RoomStreamToken.live(reached)
    await Promise.all(notified.map(async (userId) => badges.set(userId, await unreadRoomCount(db, userId, rules.get(userId)!, upTo))))
    return notifying
  }

  /** Sends `pusher` its notifications in order; records how far it got. */
  async function deliver(pusher: StoredPusher, notifications: readonly Notifying[], reached: bigint): Promise<void> {
    let position = pusher.lastStreamOrdering
    for (const n of notifications) {
      if (n.candidate.streamOrdering <= position) continue
      const outcome = await send(pusher, notificationFor(pusher, n))
      if (outcome === 'failed') {
        const failingSince = pusher.failingSince ?? clock()
        if (clock() - failingSince < config.give_up_after_ms) {
          const waitMs = Math.min(config.retry_max_ms, backoffs.has(pusher.id) ? backoffs.get(pusher.id)!.waitMs * 2 : config.retry_initial_ms)
          backoffs.set(pusher.id, { retryAt: clock() + waitMs, waitMs })
          scheduleRetry(waitMs)
          await record(pusher, position, failingSince)
          return
        }
        sent.inc({ outcome: 'dropped' })
        log.warn({ pusher: pusher.id, eventId: n.candidate.eventId }, 'push gateway failed for too long: notification dropped')
      }
      if (outcome === 'rejected') return
      position = n.candidate.streamOrdering
      // Recorded after each notification the gateway took (as Synapse does): a crash repeats at most the one in flight.
      await record(pusher, position, undefined)
    }
    backoffs.delete(pusher.id)
    if (reached > position) await record(pusher, reached, undefined)
  }

  async function send(pusher: StoredPusher, notification: Record<string, unknown>): Promise<'sent' | 'failed' | 'rejected'> {
    const url = pusher.data['url'] as string
    try {
      // An address written in the URL is not looked up: checked here.
      const host = new URL(url).hostname.replace(/^\[|\]$/g, '')
      if (isIP(host) !== 0 && isBlocked(blocked, host)) throw new Error(`gateway address ${host} is in ip_range_blocklist`)
      const res = await request(url, {
        dispatcher: agent,
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ notification }),
        headersTimeout: config.timeout_ms,
        bodyTimeout: config.timeout_ms,
      })
      const body = (await res.body.json().catch(() => ({}))) as { rejected?: unknown }
      if (res.statusCode < 200 || res.statusCode >= 300) {
        sent.inc({ outcome: 'failed' })
        log.info({ pusher: pusher.id, status: res.statusCode }, 'push gateway answered with an error')
        return 'failed'
      }
      sent.inc({ outcome: 'sent' })
      if (Array.isArray(body.rejected) && body.rejected.includes(pusher.pushkey)) {
        await db.deleteFrom('pushers').where('id', '=', pusher.id).execute()
        pushers.delete(pusher.id)
        rejected.inc()
        log.info({ pusher: pusher.id, appId: pusher.app_id }, 'push gateway rejected the pushkey: pusher removed')
        return 'rejected'
      }
      return 'sent'
    } catch (err) {
      sent.inc({ outcome: 'failed' })
      log.info({ pusher: pusher.id, err: (err as Error).message }, 'push gateway unreachable')
      return 'failed'
    }
  }

  function notificationFor(pusher: StoredPusher, n: Notifying): Record<string, unknown> {
    const outcome = n.users.get(pusher.userId)!
    const event = n.candidate.event
    const highPriority = event['type'] === 'm.room.encrypted' || outcome.highlight || outcome.tweaks['sound'] !== undefined
    const device = deviceOf(pusher, outcome.tweaks)
    const badge = n.badges.get(pusher.userId) ?? 0
    // Spec: counts of zero are left out.
    const base = { event_id: n.candidate.eventId, room_id: n.candidate.roomId, prio: highPriority ? 'high' : 'low', ...(badge > 0 && { counts: { unread: badge } }), devices: [device] }
    if (pusher.data['format'] === 'event_id_only') return base
    const sender = typeof event['sender'] === 'string' ? event['sender'] : undefined
    const senderName = sender === undefined ? undefined : n.room.displayNames.get(sender)
    return {
      ...base,
      type: event['type'],
      sender,
      ...(senderName !== undefined && { sender_display_name: senderName }),
      ...(n.room.name !== undefined && { room_name: n.room.name }),
      content: event['content'] ?? {},
      ...(event['type'] === 'm.room.member' && { user_is_target: event['state_key'] === pusher.userId }),
    }
  }

  /** The `devices` entry of a notification to `pusher`: its data without the gateway's URL and format. */
  function deviceOf(pusher: StoredPusher, tweaks: Readonly<Record<string, unknown>>): Record<string, unknown> {
    const { url: _url, format: _format, ...data } = pusher.data
    return { app_id: pusher.app_id, pushkey: pusher.pushkey, pushkey_ts: Math.floor(pusher.createdTs / 1000), data, tweaks }
  }

  /**
   * Badge updates, as Synapse sends them: a user with pushers who posts a read receipt gets a
   * notification with only `counts` (0 included, to clear the badge) on each of their pushers.
   * Best effort: not retried. The receipts read start where the stream was when this sender
   * started, so a restart sends no old ones.
   */
  async function sendBadgeUpdates(upTo: bigint): Promise<void> {
    const { users, position } = await receiptReaders(db, receiptsSeen)
    receiptsSeen = position
    if (users.length === 0) return
    const rules = await pushRulesOf(db, users)
    for (const userId of users) {
      const targets = [...pushers.values()].filter((p) => p.userId === userId)
      if (targets.length === 0) continue
      const task = unreadRoomCount(db, userId, rules.get(userId)!, RoomStreamToken.live(upTo))
        .then((badge) => Promise.all(targets.map((pusher) => send(pusher, { id: '', type: null, sender: '', counts: { unread: badge }, devices: [deviceOf(pusher, {})] }))))
        .then(() => undefined)
        .catch((err: unknown) => log.warn({ err, userId }, 'badge update failed'))
        .finally(() => badgeSends.delete(task))
      badgeSends.add(task)
    }
  }

  function scheduleRetry(waitMs: number): void {
    if (closed || retryTimer !== undefined) return
    retryTimer = setTimeout(() => {
      retryTimer = undefined
      wake()
    }, waitMs)
  }

  /** Passes until nothing is left, at most one per `passSpacingMs`; a failed pass is logged and retried later. */
  const passes = spacedPasses({
    spacingMs: passSpacingMs,
    clock,
    pass: () => {
      const refreshNow = refreshWanted
      refreshWanted = false
      return pass(refreshNow)
    },
    onError: (err) => {
      log.warn({ err }, 'push pass failed; retried later')
      scheduleRetry(config.retry_initial_ms)
    },
  })
  function wake(refresh = false): Promise<void> {
    if (closed) return Promise.resolve()
    refreshWanted ||= refresh
    return passes.wake()
  }

  const removeListener = tracker.onAdvance(() => void wake())
  // Pushers whose retry is due, and a start-up catch-up, even without advances.
  const tick = setInterval(() => void wake(), Math.max(1000, Math.min(config.retry_initial_ms, 30_000)))
  void wake()

  return {
    async runOnce() {
      await passes.running()
      await wake(true)
      // Until every delivery started, and the passes they lead to, are done. Retries of a
      // pusher whose gateway failed are not waited for: with short back-offs they follow one
      // another for as long as the gateway fails, and waiting for them could last as long.
      const pending = () => [...delivering].filter(([id]) => !retrying.has(id)).map(([, task]) => task)
      while (passes.running() !== undefined || pending().length > 0 || badgeSends.size > 0) {
        await passes.running()
        await Promise.all([...pending(), ...badgeSends])
      }
    },
    async close() {
      closed = true
      removeListener()
      clearInterval(tick)
      if (retryTimer) clearTimeout(retryTimer)
      await passes.close()
      await Promise.all([...delivering.values(), ...badgeSends])
      await agent.close()
    },
  }
}

function blockListOf(ranges: readonly string[]): BlockList {
  const list = new BlockList()
  for (const range of ranges) {
    const [address, prefix] = range.split('/') as [string, string]
    list.addSubnet(address, Number(prefix), isIP(address) === 6 ? 'ipv6' : 'ipv4')
  }
  return list
}

function isBlocked(list: BlockList, address: string): boolean {
  const family = isIP(address) === 6 ? 'ipv6' : 'ipv4'
  // An IPv4-mapped IPv6 address is checked as the IPv4 address it carries.
  const mapped = /^::ffff:([0-9.]+)$/i.exec(address)
  return mapped ? list.check(mapped[1]!, 'ipv4') : list.check(address, family)
}

/** A DNS lookup that leaves out blocked addresses, and fails when none is left. */
function guardedLookup(list: BlockList): LookupFunction {
  return (hostname, options, callback) => {
    dnsLookup(hostname, { ...options, all: true }, (err, addresses: LookupAddress[]) => {
      if (err) return callback(err, '', 0)
      const allowed = addresses.filter((a) => !isBlocked(list, a.address))
      if (allowed.length === 0) return callback(Object.assign(new Error(`${hostname} resolves only to addresses in ip_range_blocklist`), { code: 'EBLOCKED' }), '', 0)
      if (options.all) return (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, allowed)
      return callback(null, allowed[0]!.address, allowed[0]!.family)
    })
  }
}
