import { createHash } from 'node:crypto'
import { sql, type Kysely } from 'kysely'
import type { Database } from './schema.js'
import { StorageError } from './errors.js'

/**
 * Space hierarchies (client-server API `GET /rooms/{roomId}/hierarchy`): the rooms below a space,
 * walked breadth first through its `m.space.child` state events, as Synapse's room summary
 * handler does for local rooms.
 *
 * - A child counts when its `m.space.child` content has a non-empty `via` list. Children are
 *   visited in the order of their `order` field (printable ASCII, at most 50 characters; others
 *   ignored), then of their event's timestamp, then of room ID.
 * - A room is shown when the requester may see its summary: they are joined or invited, or its
 *   join rule is `public`, `knock` or `knock_restricted`, or its history is `world_readable`, or
 *   its join rule is `restricted` with an allowed room the requester is joined to. A room not
 *   shown is not descended into; the root not shown is an error (403, as Synapse). Rooms of
 *   other servers are left out (no federation).
 * - `max_depth` stops the walk below that depth (the root is depth 0); `suggested_only` follows
 *   only children marked `suggested`.
 * - Pages: `limit` rooms each; `next_batch` is the count of rooms already given with a digest of
 *   the walk's parameters, so the same walk is redone and a token of another walk is refused.
 */

/** One room of the answer. */
export interface HierarchyRoom {
  readonly room_id: string
  readonly name?: string
  readonly topic?: string
  readonly canonical_alias?: string
  readonly avatar_url?: string
  readonly num_joined_members: number
  readonly world_readable: boolean
  readonly guest_can_join: boolean
  readonly join_rule?: string
  readonly room_type?: string
  readonly room_version: string
  /** The algorithm of the room's `m.room.encryption`, when it is encrypted. */
  readonly encryption?: string
  /** A restricted room's allowed rooms (its join rule's `m.room_membership` conditions). */
  readonly allowed_room_ids?: string[]
  readonly children_state: StrippedChild[]
}

interface StrippedChild {
  readonly type: 'm.space.child'
  readonly state_key: string
  readonly content: Record<string, unknown>
  readonly sender: string
  readonly origin_server_ts: number
}

export interface HierarchyQuery {
  readonly roomId: string
  readonly userId: string
  readonly limit: number
  readonly maxDepth: number | undefined
  readonly suggestedOnly: boolean
  readonly from: string | undefined
}

/** Rooms walked at most per request, whatever the page size: a bound on the work of one call. */
const maxWalked = 1000

/**
 * A page of the hierarchy below `q.roomId`.
 *
 * @throws StorageError ES_FORBIDDEN when the requester may not see the root; ES_INVALID_PARAM for a token of another walk.
 * @example
 * const page = await spaceHierarchy(db, { roomId: '!space:hs', userId: '@a:hs', limit: 50, maxDepth: undefined, suggestedOnly: false, from: undefined })
 * page.rooms.map((r) => r.room_id) // ['!space:hs', '!child:hs']
 */
export async function spaceHierarchy(db: Kysely<Database>, q: HierarchyQuery): Promise<{ rooms: HierarchyRoom[]; next_batch?: string }> {
  const digest = createHash('sha256').update(JSON.stringify([q.roomId, q.maxDepth ?? null, q.suggestedOnly])).digest('hex').slice(0, 12)
  let skip = 0
  if (q.from !== undefined) {
    const match = /^([0-9]{1,6})_([0-9a-f]{12})$/.exec(q.from)
    if (!match || match[2] !== digest) throw new StorageError('ES_INVALID_PARAM', 'from is not a token of this hierarchy walk (same room, max_depth and suggested_only)')
    skip = Number(match[1])
  }

  const rooms: HierarchyRoom[] = []
  const seen = new Set<string>([q.roomId])
  let level: string[] = [q.roomId]
  let walked = 0
  for (let depth = 0; level.length > 0 && walked < maxWalked; depth++) {
    const summaries = await roomSummaries(db, level, q.userId)
    const next: string[] = []
    for (const roomId of level) {
      const summary = summaries.get(roomId)
      if (summary === undefined || !summary.accessible) {
        if (depth === 0) throw new StorageError('ES_FORBIDDEN', 'You may not see this room or it does not exist')
        continue
      }
      walked++
      rooms.push(summary.room)
      if (q.maxDepth !== undefined && depth >= q.maxDepth) continue
      for (const child of summary.children) {
        if (q.suggestedOnly && child.content['suggested'] !== true) continue
        if (seen.has(child.state_key)) continue
        seen.add(child.state_key)
        next.push(child.state_key)
      }
    }
    level = next
  }
  const page = rooms.slice(skip, skip + q.limit)
  const more = skip + q.limit < rooms.length
  return { rooms: page, ...(more && { next_batch: `${skip + q.limit}_${digest}` }) }
}

export interface RoomSummary {
  /** Whether the requester may see the summary (a member, invited, or the room is public, knockable, world readable, or restricted to a room they are in). */
  readonly accessible: boolean
  /** The requester's membership, when they have one. */
  readonly membership?: string
  readonly room: HierarchyRoom
  /** The children to walk, in order. */
  readonly children: StrippedChild[]
}

/**
 * The summaries of local `roomIds` (absent: not a room of this server), with the requester's
 * access and membership (`userId` undefined: an unauthenticated requester). Also the answer of
 * `GET /room_summary` (api/routes/spaces.ts).
 *
 * @example
 * const summary = (await roomSummaries(db, [roomId], '@a:hs')).get(roomId)
 * summary?.accessible ? summary.room.num_joined_members : undefined
 */
export async function roomSummaries(db: Kysely<Database>, roomIds: readonly string[], userId: string | undefined): Promise<Map<string, RoomSummary>> {
  const requester = userId ?? ''
  const { rows } = await sql<{ room_id: string; room_version: string; type: string | null; state_key: string | null; sender: string | null; json: string | null; members: number; membership: string | null; allowed: boolean }>`
    -- The per-room facts once per room, not once per state row of the join below.
    WITH r AS MATERIALIZED (
      SELECT r.room_id, r.room_version,
        (SELECT count(*)::int4 FROM current_state_events m WHERE m.room_id = r.room_id AND m.type = 'm.room.member' AND m.membership = 'join') AS members,
        (SELECT m.membership FROM current_state_events m WHERE m.room_id = r.room_id AND m.type = 'm.room.member' AND m.state_key = ${requester}) AS membership,
        -- A restricted join rule's allowed room that the requester is joined to.
        EXISTS (SELECT 1 FROM current_state_events jr JOIN event_json jj ON jj.event_id = jr.event_id
                CROSS JOIN LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof(jj.json::jsonb -> 'content' -> 'allow') = 'array' THEN jj.json::jsonb -> 'content' -> 'allow' ELSE '[]' END) a
                JOIN current_state_events m ON m.room_id = a ->> 'room_id' AND m.type = 'm.room.member' AND m.state_key = ${requester} AND m.membership = 'join'
                WHERE jr.room_id = r.room_id AND jr.type = 'm.room.join_rules' AND jr.state_key = '' AND a ->> 'type' = 'm.room_membership') AS allowed
      FROM rooms AS r WHERE r.room_id = ANY(${[...roomIds]}::text[])
    )
    SELECT r.room_id, r.room_version, c.type, c.state_key, e.sender, j.json, r.members, r.membership, r.allowed
    FROM r
    LEFT JOIN current_state_events c ON c.room_id = r.room_id
      AND c.type IN ('m.room.name', 'm.room.topic', 'm.room.canonical_alias', 'm.room.avatar', 'm.room.join_rules',
                     'm.room.history_visibility', 'm.room.guest_access', 'm.room.create', 'm.room.encryption', 'm.space.child')
    LEFT JOIN events e ON e.event_id = c.event_id
    LEFT JOIN event_json j ON j.event_id = c.event_id`.execute(db)
  const byRoom = new Map<string, typeof rows>()
  for (const row of rows) {
    const list = byRoom.get(row.room_id)
    if (list) list.push(row)
    else byRoom.set(row.room_id, [row])
  }
  const result = new Map<string, RoomSummary>()
  for (const [roomId, roomRows] of byRoom) {
    const state = new Map<string, Record<string, unknown>>()
    const children: (StrippedChild & { order: string | undefined })[] = []
    for (const row of roomRows) {
      if (row.type === null || row.json === null) continue
      const pdu = JSON.parse(row.json) as { content?: Record<string, unknown>; origin_server_ts?: number }
      const content = pdu.content ?? {}
      if (row.type !== 'm.space.child') {
        if (row.state_key === '') state.set(row.type, content)
        continue
      }
      const via = content['via']
      if (!Array.isArray(via) || via.length === 0 || !row.state_key?.startsWith('!')) continue
      const order = typeof content['order'] === 'string' && /^[\x20-\x7E]{1,50}$/.test(content['order']) ? content['order'] : undefined
      children.push({ type: 'm.space.child', state_key: row.state_key, content, sender: row.sender!, origin_server_ts: pdu.origin_server_ts ?? 0, order })
    }
    children.sort(
      (a, b) =>
        (a.order === undefined ? 1 : 0) - (b.order === undefined ? 1 : 0) ||
        (a.order !== undefined && b.order !== undefined ? (a.order < b.order ? -1 : a.order > b.order ? 1 : 0) : 0) ||
        a.origin_server_ts - b.origin_server_ts ||
        (a.state_key < b.state_key ? -1 : a.state_key > b.state_key ? 1 : 0),
    )
    const text = (type: string, key: string) => {
      const value = state.get(type)?.[key]
      return typeof value === 'string' && value !== '' ? value : undefined
    }
    const joinRule = text('m.room.join_rules', 'join_rule')
    const worldReadable = text('m.room.history_visibility', 'history_visibility') === 'world_readable'
    const membership = roomRows[0]!.membership
    const accessible =
      membership === 'join' ||
      membership === 'invite' ||
      worldReadable ||
      joinRule === 'public' ||
      joinRule === 'knock' ||
      joinRule === 'knock_restricted' ||
      (joinRule === 'restricted' && roomRows[0]!.allowed)
    const optional = {
      name: text('m.room.name', 'name'),
      topic: text('m.room.topic', 'topic'),
      canonical_alias: text('m.room.canonical_alias', 'alias'),
      avatar_url: text('m.room.avatar', 'url'),
      join_rule: joinRule,
      room_type: text('m.room.create', 'type'),
      encryption: text('m.room.encryption', 'algorithm'),
    }
    const allow = state.get('m.room.join_rules')?.['allow']
    const allowedRoomIds =
      (joinRule === 'restricted' || joinRule === 'knock_restricted') && Array.isArray(allow)
        ? allow.flatMap((a: unknown) => (isObject(a) && a['type'] === 'm.room_membership' && typeof a['room_id'] === 'string' ? [a['room_id']] : []))
        : undefined
    const room: HierarchyRoom = {
      room_id: roomId,
      ...Object.fromEntries(Object.entries(optional).filter(([, v]) => v !== undefined)),
      num_joined_members: roomRows[0]!.members,
      world_readable: worldReadable,
      guest_can_join: text('m.room.guest_access', 'guest_access') === 'can_join',
      room_version: roomRows[0]!.room_version,
      ...(allowedRoomIds !== undefined && { allowed_room_ids: allowedRoomIds }),
      children_state: children.map(({ order: _order, ...child }) => child),
    }
    result.set(roomId, { accessible, room, children: room.children_state, ...(membership !== null && { membership }) })
  }
  return result
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}
