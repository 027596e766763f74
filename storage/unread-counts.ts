import { sql, type Kysely, type RawBuilder } from 'kysely'
import type { PushRuleSet } from './default-push-rules.js'
import { pushRulesOf } from './push-rules.js'
import { rowCoveredBy, type EventRow } from './room-reads.js'
import { evaluatePushRules, type PushContext, type PushEvent } from './push-evaluator.js'
import { relationOf } from './relations.js'
import type { Database } from './schema.js'
import type { RoomStreamToken } from './streams/room-stream-token.js'

/**
 * Unread notification counts (`unread_notifications` of a joined room in /sync): how many
 * events after the user's read receipt notify them under their push rules, and how many of
 * those are highlighted (client-server API "Receiving notifications").
 *
 * Counted when read, not when persisted: Synapse evaluates every member's rules in the
 * persister and writes a row per notifying event and member, which costs the write path per
 * member; here a sync evaluates the events it is about to deliver anyway, for its one user.
 *
 * - **Counted**: events after the join that began the user's membership and after their
 *   `m.read` / `m.read.private` receipts that cover the event, up to the sync's position, not
 *   sent by the user. Counts are kept per thread (client-server API "Threaded read receipts"):
 *   an event in a thread (`m.relates_to` `m.thread`) is covered by an unthreaded receipt or one
 *   for its thread, any other event by an unthreaded or `main` receipt. At most `maxCounted` of
 *   the newest unread events are evaluated per room, so counts stop at that (clients show "99+"
 *   long before).
 * - **Context** for the rules: the user's display name in the room, the joined member count and
 *   the power levels, as they are now.
 * - **Incremental**: an `UnreadCounter` remembers each user's counts per room with the sync
 *   position they are complete to. A later sync starting at that position adds what its own
 *   timeline brings, without a query, when the timeline holds every new event (not limited, no
 *   filter), none of them a member or power levels event, no receipt of the user's own arrived, and
 *   the rules did not change. Anything else recounts from the receipt (one statement for all
 *   such rooms of a sync).
 */

/** The counts of one room or thread, as /sync shows them. */
export interface UnreadCounts {
  readonly notification_count: number
  readonly highlight_count: number
}

/** A room's counts by thread: `main` for the events in no thread, else the thread root's ID (threads with none left out). */
export type RoomUnread = ReadonlyMap<string, UnreadCounts>

/** The thread an event belongs to, for receipts and counts: its `m.thread` root, else `main`. */
export function threadOf(event: PushEvent, stateKey: string | null): string {
  const content = event['content']
  const relation = content !== null && typeof content === 'object' && !Array.isArray(content) ? relationOf(content as Record<string, unknown>, stateKey) : undefined
  return relation?.relationType === 'm.thread' ? relation.relatesToId : 'main'
}

/** Positions an entry remembers being complete at while nothing happened in its room. */
const quietPositions = 4

/** Events evaluated per room and recount, newest first: counts stop here. */
export const maxCounted = 1000

/** One joined room the sync answers for. */
export interface UnreadRoom {
  readonly roomId: string
  /** Position of the user's membership event at the sync's position (their join or a later profile change). */
  readonly membershipAt: bigint
  /**
   * Every event of the room after the sync's `since` up to its position, when the sync read them
   * all (undefined: not known, or not an incremental sync).
   */
  readonly newEvents: readonly EventRow[] | undefined
  /** True when the user's own receipt in the room moved after `since`. */
  readonly ownReceiptMoved: boolean
}

/** What one sync knows when it asks for counts. */
export interface UnreadQuery {
  readonly userId: string
  /** Positions the sync read changes after; absent for an initial sync. */
  readonly since?: { readonly room: RoomStreamToken; readonly receipts: bigint; readonly accountData: bigint }
  /** Positions it read up to. */
  readonly upTo: { readonly room: RoomStreamToken; readonly receipts: bigint; readonly accountData: bigint }
  /** The user's push rules changed after `since` (an `m.push_rules` account data change). */
  readonly rulesChanged: boolean
  readonly rooms: readonly UnreadRoom[]
  /**
   * Joined rooms not in the answer that had no event and no receipt of the user's own after
   * `since`: their counts carry forward to the sync's position.
   */
  readonly quietRooms: readonly string[]
}

interface RoomEntry {
  /**
   * The room positions (serialized) the counts are complete up to: the last sync's, and those
   * of the syncs before it that found nothing new in the room (a long-poll's first, empty read).
   */
  roomAt: string[]
  /** … and this receipts position. */
  receiptsAt: bigint
  readonly threads: Map<string, { notifications: number; highlights: number }>
  readonly context: Omit<PushContext, 'userId'>
}

interface UserEntry {
  rules: PushRuleSet | undefined
  /** The rules are current as of this account data position. */
  rulesAt: bigint
  readonly rooms: Map<string, RoomEntry>
}

/**
 * Per-process memory of counts, so that a long-polling client's syncs evaluate only their new
 * events. Holds the rooms of at most `maxRooms` (user, room) pairs: the users who synced least
 * recently are dropped first (their next sync counts afresh).
 *
 * @example
 * const counter = new UnreadCounter()
 * const counts = await counter.count(db, query) // Map { '!r:hs' => { notification_count: 2, highlight_count: 0 } }
 */
export class UnreadCounter {
  readonly #users = new Map<string, UserEntry>()
  #rooms = 0

  /** `maxRooms`: about 200 bytes each, plus what their threads hold. */
  constructor(private readonly maxRooms = 200_000) {}

  /** (user, room) pairs held. */
  get size(): number {
    return this.#rooms
  }

  async count(db: Kysely<Database>, q: UnreadQuery): Promise<Map<string, RoomUnread>> {
    const user = this.#user(q.userId)
    const since = q.since
    const continues = (entry: RoomEntry | undefined): entry is RoomEntry =>
      entry !== undefined && since !== undefined && entry.roomAt.includes(since.room.toString()) && since.receipts <= entry.receiptsAt
    const rulesCurrent = user.rules !== undefined && since !== undefined && since.accountData <= user.rulesAt && !q.rulesChanged

    const result = new Map<string, RoomUnread>()
    const recount: UnreadRoom[] = []
    for (const room of q.rooms) {
      const entry = user.rooms.get(room.roomId)
      const events = room.newEvents
      if (!rulesCurrent || !continues(entry) || room.ownReceiptMoved || events === undefined || events.some(changesContext)) {
        recount.push(room)
        continue
      }
      addEvents(entry, user.rules!, q.userId, events.map((event) => ({ event: event.pdu, thread: threadOf(event.pdu, event.stateKey) })))
      result.set(room.roomId, this.#advance(entry, q, false))
    }
    if (since !== undefined) {
      for (const roomId of q.quietRooms) {
        const entry = user.rooms.get(roomId)
        if (continues(entry)) this.#advance(entry, q, true)
      }
    }
    if (recount.length === 0) {
      if (rulesCurrent) user.rulesAt = q.upTo.accountData
      return result
    }

    const [rules, recounted] = await Promise.all([rulesCurrent ? user.rules! : pushRulesOf(db, [q.userId]).then((sets) => sets.get(q.userId)!), readUnread(db, q.userId, recount, q.upTo.room)])
    user.rules = rules
    user.rulesAt = q.upTo.accountData
    // Other users' syncs may have dropped this one meanwhile: then the counts are answered, not kept.
    const kept = this.#users.get(q.userId) === user
    for (const { roomId, context, events } of recounted) {
      const entry: RoomEntry = { roomAt: [], receiptsAt: 0n, threads: new Map(), context }
      addEvents(entry, rules, q.userId, events)
      if (kept && !user.rooms.has(roomId)) this.#rooms++
      user.rooms.set(roomId, entry)
      result.set(roomId, this.#advance(entry, q, false))
    }
    return result
  }

  /** Marks `entry` complete up to the sync's position; `quiet`: also still at the positions it was. */
  #advance(entry: RoomEntry, q: UnreadQuery, quiet: boolean): RoomUnread {
    const at = q.upTo.room.toString()
    entry.roomAt = quiet ? [...entry.roomAt.filter((p) => p !== at).slice(-(quietPositions - 1)), at] : [at]
    entry.receiptsAt = q.upTo.receipts
    return new Map([...entry.threads].map(([thread, c]) => [thread, { notification_count: c.notifications, highlight_count: c.highlights }]))
  }

  #user(userId: string): UserEntry {
    let user = this.#users.get(userId)
    if (user === undefined) user = { rules: undefined, rulesAt: 0n, rooms: new Map() }
    else this.#users.delete(userId)
    // The least recently synced users go first; the current one stays, whatever it holds.
    for (const [oldest, entry] of this.#users) {
      if (this.#rooms <= this.maxRooms) break
      this.#users.delete(oldest)
      this.#rooms -= entry.rooms.size
    }
    this.#users.set(userId, user)
    return user
  }
}

/** Adds to `entry`'s threads the events of others among `events` that notify `userId`. */
function addEvents(entry: RoomEntry, rules: PushRuleSet, userId: string, events: readonly { event: PushEvent; thread: string }[]): void {
  const context = { userId, ...entry.context }
  for (const { event, thread } of events) {
    if (event['sender'] === userId) continue
    const outcome = evaluatePushRules(rules, event, context)
    if (!outcome.notify) continue
    const counts = entry.threads.get(thread) ?? { notifications: 0, highlights: 0 }
    counts.notifications++
    if (outcome.highlight) counts.highlights++
    entry.threads.set(thread, counts)
  }
}

/** Member and power level events change a rule's context (display name, member count, sender power). */
function changesContext(event: EventRow): boolean {
  return event.stateKey !== null && (event.type === 'm.room.member' || event.type === 'm.room.power_levels')
}

interface Recounted {
  readonly roomId: string
  readonly context: Omit<PushContext, 'userId'>
  readonly events: { event: PushEvent; thread: string }[]
}

/**
 * For each room: the context of the rules and the newest `maxCounted` events to count with their
 * threads (after the join and the receipt of their thread, covered by `upTo`, not the user's
 * own), in one statement.
 */
async function readUnread(db: Kysely<Database>, userId: string, rooms: readonly Pick<UnreadRoom, 'roomId' | 'membershipAt'>[], upTo: RoomStreamToken, perRoom = maxCounted): Promise<Recounted[]> {
  const { rows } = await sql<{
    room_id: string
    display_name: string | null
    member_count: number
    power_levels: string | null
    json: string | null
    thread: string | null
  }>`
    WITH r AS (
      SELECT r.room_id, r.membership_at FROM unnest(${rooms.map((r) => r.roomId)}::text[], ${rooms.map((r) => r.membershipAt.toString())}::int8[]) AS r(room_id, membership_at)
    ), a AS (
      SELECT r.room_id, rc.receipts,
        GREATEST(${joinStartSql(userId)}, (rc.receipts ->> '')::int8) AS lower,
        (SELECT j.json::jsonb -> 'content' ->> 'displayname' FROM current_state_events c JOIN event_json j ON j.event_id = c.event_id
         WHERE c.room_id = r.room_id AND c.type = 'm.room.member' AND c.state_key = ${userId}) AS display_name,
        (SELECT count(*)::int4 FROM current_state_events c WHERE c.room_id = r.room_id AND c.type = 'm.room.member' AND c.membership = 'join') AS member_count,
        (SELECT j.json FROM current_state_events c JOIN event_json j ON j.event_id = c.event_id
         WHERE c.room_id = r.room_id AND c.type = 'm.room.power_levels' AND c.state_key = '') AS power_levels
      FROM r
      CROSS JOIN LATERAL (SELECT ${receiptsByThreadSql(userId)} AS receipts) rc
    )
    SELECT a.room_id, a.display_name, a.member_count, a.power_levels, x.json, x.thread
    FROM a LEFT JOIN LATERAL (
      SELECT j.json, t.relates_to_id AS thread FROM events e
      JOIN event_json j ON j.event_id = e.event_id
      LEFT JOIN event_relations t ON t.event_id = e.event_id AND t.relation_type = 'm.thread'
      LEFT JOIN instances i ON i.instance_name = e.instance_name
      WHERE e.room_id = a.room_id AND e.stream_ordering > a.lower
        AND e.stream_ordering > coalesce((a.receipts ->> coalesce(t.relates_to_id, 'main'))::int8, a.lower)
        AND NOT e.outlier AND e.sender <> ${userId} AND ${rowCoveredBy(upTo)}
      ORDER BY e.stream_ordering DESC
      LIMIT ${perRoom}
    ) x ON true`.execute(db)
  const byRoom = new Map<string, Recounted>()
  for (const row of rows) {
    let room = byRoom.get(row.room_id)
    if (room === undefined) {
      const powerLevels = row.power_levels === null ? undefined : ((JSON.parse(row.power_levels) as { content?: Record<string, unknown> }).content ?? {})
      room = { roomId: row.room_id, context: { displayName: row.display_name ?? undefined, memberCount: row.member_count, powerLevels }, events: [] }
      byRoom.set(row.room_id, room)
    }
    if (row.json !== null) room.events.push({ event: JSON.parse(row.json) as PushEvent, thread: row.thread ?? 'main' })
  }
  return [...byRoom.values()]
}

/**
 * SQL: the position of the join that began `userId`'s membership in the row `r` (columns
 * `room_id` and `membership_at`, their membership event at the position read): the first join
 * after the last non-join membership.
 */
export function joinStartSql(userId: string): RawBuilder<unknown> {
  return sql`(SELECT min(m.stream_ordering) FROM room_memberships m
    WHERE m.room_id = r.room_id AND m.user_id = ${userId} AND m.membership = 'join' AND m.stream_ordering <= r.membership_at
      AND m.stream_ordering > coalesce((SELECT max(o.stream_ordering) FROM room_memberships o
                                        WHERE o.room_id = r.room_id AND o.user_id = ${userId} AND o.membership <> 'join'
                                          AND o.stream_ordering <= r.membership_at), -9223372036854775808))`
}

/** SQL: `userId`'s read receipts in the row `r`'s room as `{thread: position}` ('' unthreaded; the later of both types). */
export function receiptsByThreadSql(userId: string): RawBuilder<unknown> {
  return sql`(SELECT coalesce(jsonb_object_agg(x.thread_id, x.position), '{}') FROM (
    SELECT rc.thread_id, max(e.stream_ordering) AS position FROM receipts rc JOIN events e ON e.event_id = rc.event_id
    WHERE rc.room_id = r.room_id AND rc.user_id = ${userId} AND rc.receipt_type IN ('m.read', 'm.read.private')
    GROUP BY rc.thread_id) x)`
}

/** `userId`'s joined rooms now, each with the position of their membership event. */
export async function joinedNow(db: Kysely<Database>, userId: string): Promise<{ roomId: string; membershipAt: bigint }[]> {
  const rows = await db
    .selectFrom('current_state_events')
    .select(['room_id', 'stream_ordering'])
    .where('type', '=', 'm.room.member')
    .where('state_key', '=', userId)
    .where('membership', '=', 'join')
    .execute()
  return rows.map((r) => ({ roomId: r.room_id, membershipAt: BigInt(r.stream_ordering) }))
}

/**
 * How many of `userId`'s joined rooms hold an unread event that notifies them under `rules`: the
 * badge of a push notification (`counts.unread`, by room as Synapse counts it by default). Looks
 * at the newest `perRoom` unread events of each room, in one statement.
 *
 * @example
 * await unreadRoomCount(db, '@bob:hs', rules, RoomStreamToken.live(position)) // 3
 */
export async function unreadRoomCount(db: Kysely<Database>, userId: string, rules: PushRuleSet, upTo: RoomStreamToken, perRoom = 20): Promise<number> {
  const joined = await joinedNow(db, userId)
  if (joined.length === 0) return 0
  const rooms = await readUnread(db, userId, joined, upTo, perRoom)
  return rooms.filter(({ context, events }) => events.some(({ event }) => event['sender'] !== userId && evaluatePushRules(rules, event, { userId, ...context }).notify)).length
}
