import { sql, type Kysely } from 'kysely'
import type { PushAction } from './default-push-rules.js'
import { evaluatePushRules } from './push-evaluator.js'
import { contextIn, pushContext } from './pushers.js'
import { pushRulesOf } from './push-rules.js'
import { rowCoveredBy, toClientEvents, toRow, type RawEventRow } from './room-reads.js'
import type { Database } from './schema.js'
import type { RoomStreamToken } from './streams/room-stream-token.js'
import type { JsonObject } from './events/redaction.js'
import { joinedNow, joinStartSql, receiptsByThreadSql } from './unread-counts.js'

/**
 * `GET /notifications` (client-server API "Listing notifications"): the events that notified the
 * user, newest first, across the rooms they are joined to now, each with the actions of the rule
 * that matched and whether a receipt of theirs covers it (`read`, per thread as the counts).
 *
 * Found when asked, like the unread counts: the user's rooms' events (since each room's join,
 * not their own) are read newest first and their push rules evaluated as they are now. A page
 * stops at `limit` notifications or after `maxScanned` events, whichever comes first; then
 * `next_token` goes on from there (a page may hold fewer than `limit` with more to come).
 */

/** Events evaluated per request at most. */
export const maxScanned = 1000
const batch = 200

export interface NotificationsQuery {
  readonly userId: string
  /** Events before this stream position (a `next_token`); absent: from the newest. */
  readonly before?: bigint
  readonly limit: number
  /** `only=highlight`. */
  readonly highlightOnly: boolean
  readonly upTo: RoomStreamToken
  readonly now: number
}

export interface NotificationsPage {
  readonly notifications: { actions: readonly PushAction[]; event: JsonObject; read: boolean; room_id: string; ts: number }[]
  readonly next_token?: string
}

/**
 * @example
 * const page = await notificationsPage(db, { userId, limit: 20, highlightOnly: false, upTo: tracker.currentToken(), now: Date.now() })
 * page.notifications[0].event.event_id // the newest notifying event
 */
export async function notificationsPage(db: Kysely<Database>, q: NotificationsQuery): Promise<NotificationsPage> {
  const joined = await joinedNow(db, q.userId)
  if (joined.length === 0) return { notifications: [] }
  const roomIds = joined.map((r) => r.roomId)
  const [rules, rooms, receipts] = await Promise.all([
    pushRulesOf(db, [q.userId]),
    pushContext(db, { rooms: roomIds, members: [q.userId] }),
    sql<{ room_id: string; receipts: Record<string, string> }>`
      SELECT r.room_id, ${receiptsByThreadSql(q.userId)} AS receipts FROM unnest(${roomIds}::text[]) AS r(room_id)`.execute(db),
  ])
  const ruleSet = rules.get(q.userId)!
  const readUpTo = new Map(receipts.rows.map((row) => [row.room_id, row.receipts]))
  const found: { row: ReturnType<typeof toRow>; actions: readonly PushAction[]; read: boolean }[] = []
  let before = q.before
  let scanned = 0
  // Whether events before `before` may remain unread by this page.
  let more = true
  while (found.length < q.limit && scanned < maxScanned) {
    const { rows } = await sql<RawEventRow & { thread: string | null }>`
      WITH r AS (
        SELECT r.room_id, ${joinStartSql(q.userId)} AS start
        FROM unnest(${roomIds}::text[], ${joined.map((r) => r.membershipAt.toString())}::int8[]) AS r(room_id, membership_at)
      )
      SELECT e.event_id, e.room_id, e.type, e.state_key, e.sender, e.depth, e.stream_ordering, j.json, t.relates_to_id AS thread
      FROM r
      CROSS JOIN LATERAL (
        SELECT e.* FROM events e
        LEFT JOIN instances i ON i.instance_name = e.instance_name
        WHERE e.room_id = r.room_id AND e.stream_ordering > r.start AND NOT e.outlier AND e.sender <> ${q.userId}
          AND ${rowCoveredBy(q.upTo)} ${before === undefined ? sql`` : sql`AND e.stream_ordering < ${before}::int8`}
        ORDER BY e.stream_ordering DESC LIMIT ${batch}
      ) e
      JOIN event_json j ON j.event_id = e.event_id
      LEFT JOIN event_relations t ON t.event_id = e.event_id AND t.relation_type = 'm.thread'
      ORDER BY e.stream_ordering DESC
      LIMIT ${batch}`.execute(db)
    let taken = 0
    for (const raw of rows) {
      taken++
      scanned++
      before = raw.stream_ordering
      const row = toRow(raw)
      const outcome = evaluatePushRules(ruleSet, row.pdu, contextIn(rooms.get(row.roomId)!, q.userId))
      if (!outcome.notify || (q.highlightOnly && !outcome.highlight)) continue
      const positions = readUpTo.get(row.roomId) ?? {}
      const covered = [positions[''], positions[raw.thread ?? 'main']].some((p) => p !== undefined && BigInt(p) >= row.streamOrdering)
      found.push({ row, actions: outcome.actions, read: covered })
      if (found.length === q.limit) break
    }
    // Stopped inside the batch: older events remain. A short batch read the last of them.
    if (taken < rows.length) break
    if (rows.length < batch) {
      more = false
      break
    }
  }
  const events = await toClientEvents(db, found.map((f) => f.row), { userId: q.userId }, q.now)
  return {
    notifications: found.map((f, i) => ({ actions: f.actions, event: events[i]!, read: f.read, room_id: f.row.roomId, ts: Number(f.row.pdu['origin_server_ts'] ?? 0) })),
    ...(more && before !== undefined && { next_token: before.toString() }),
  }
}
