import { sql, type Kysely } from 'kysely'
import type { Database } from './schema.js'
import { getStateEntries, type RoomStateEntry } from './state-entries.js'

/**
 * The published room list (`rooms.is_public`): which rooms appear in `/publicRooms`, and the
 * summaries shown there, read from each room's current state.
 */

/** One room of the public room list (the spec's `PublishedRoomsChunk`). */
export interface PublicRoomSummary {
  readonly room_id: string
  readonly num_joined_members: number
  readonly world_readable: boolean
  readonly guest_can_join: boolean
  readonly name?: string
  readonly topic?: string
  readonly canonical_alias?: string
  readonly avatar_url?: string
  readonly join_rule?: string
}

/** A page of the public room list. */
export interface PublicRoomsPage {
  readonly chunk: PublicRoomSummary[]
  /** Offset of the next page, when there is one. */
  readonly nextOffset?: number
  /** How many rooms are published in total. */
  readonly total: number
}

/**
 * Publishes (`true`) or unpublishes `roomId`; false when the room does not exist.
 *
 * @example
 * await setRoomPublished(db, '!abc:example.org', true) // true
 */
export async function setRoomPublished(db: Kysely<Database>, roomId: string, published: boolean): Promise<boolean> {
  const result = await db.updateTable('rooms').set({ is_public: published }).where('room_id', '=', roomId).executeTakeFirst()
  return result.numUpdatedRows > 0n
}

/**
 * Whether `roomId` is published; `undefined` when the room does not exist.
 *
 * @example
 * await isRoomPublished(db, '!abc:example.org') // false
 */
export async function isRoomPublished(db: Kysely<Database>, roomId: string): Promise<boolean | undefined> {
  const row = await db.selectFrom('rooms').select('is_public').where('room_id', '=', roomId).executeTakeFirst()
  return row?.is_public
}

const summaryKeys = ['m.room.name', 'm.room.topic', 'm.room.canonical_alias', 'm.room.avatar', 'm.room.join_rules', 'm.room.history_visibility', 'm.room.guest_access'].map(
  (type) => ({ type, stateKey: '' }),
)

/** Which page of the public room list to read. */
export interface PublicRoomsQuery {
  readonly limit: number
  readonly offset: number
  /** Only rooms whose name, topic or canonical alias contains this, case-insensitively. */
  readonly searchTerm?: string
}

/**
 * A page of published rooms, most joined members first (ties by room ID), with their summaries.
 * Offsets are positions in that order, so a room gaining members between pages may be skipped
 * or shown twice (as with Synapse's tokens). `total` counts every published room, matching the
 * search term or not.
 *
 * @example
 * const page = await publicRooms(db, { limit: 20, offset: 0, searchTerm: 'lobby' })
 * page.chunk[0] // { room_id: '!abc:example.org', name: 'Lobby', num_joined_members: 3, … }
 */
export async function publicRooms(db: Kysely<Database>, page: PublicRoomsQuery): Promise<PublicRoomsPage> {
  const joined = sql<string>`(select count(*) from current_state_events m where m.room_id = r.room_id and m.type = 'm.room.member' and m.membership = 'join')`
  const term = page.searchTerm
  const matches = sql<boolean>`exists (
    select 1 from current_state_events c join event_json j on j.event_id = c.event_id
    where c.room_id = r.room_id and c.state_key = '' and c.type in ('m.room.name', 'm.room.topic', 'm.room.canonical_alias')
      and strpos(lower(j.json::jsonb -> 'content' ->> (case c.type when 'm.room.name' then 'name' when 'm.room.topic' then 'topic' else 'alias' end)), lower(${term ?? ''})) > 0)`
  const [rows, total] = await Promise.all([
    db
      .selectFrom('rooms as r')
      .select(['r.room_id', joined.as('joined')])
      .where('r.is_public', '=', true)
      .$if(term !== undefined && term !== '', (qb) => qb.where(matches))
      .orderBy(sql`2`, 'desc')
      .orderBy('r.room_id')
      .limit(page.limit + 1)
      .offset(page.offset)
      .execute(),
    db.selectFrom('rooms').select((eb) => eb.fn.countAll<string>().as('n')).where('is_public', '=', true).executeTakeFirstOrThrow(),
  ])
  const shown = rows.slice(0, page.limit)
  const entries = await getStateEntries(
    db,
    shown.map((row) => row.room_id),
    summaryKeys,
  )
  const byRoom = new Map<string, RoomStateEntry[]>()
  for (const entry of entries) byRoom.set(entry.roomId, [...(byRoom.get(entry.roomId) ?? []), entry])
  return {
    chunk: shown.map((row) => summarize(row.room_id, Number(row.joined), byRoom.get(row.room_id) ?? [])),
    ...(rows.length > page.limit && { nextOffset: page.offset + page.limit }),
    total: Number(total.n),
  }
}

function summarize(roomId: string, joined: number, state: readonly RoomStateEntry[]): PublicRoomSummary {
  const field = (type: string, key: string): string | undefined => {
    const value = state.find((s) => s.type === type)?.content[key]
    return typeof value === 'string' ? value : undefined
  }
  const optional = {
    name: field('m.room.name', 'name'),
    topic: field('m.room.topic', 'topic'),
    canonical_alias: field('m.room.canonical_alias', 'alias'),
    avatar_url: field('m.room.avatar', 'url'),
    join_rule: field('m.room.join_rules', 'join_rule'),
  }
  return {
    room_id: roomId,
    num_joined_members: joined,
    world_readable: field('m.room.history_visibility', 'history_visibility') === 'world_readable',
    guest_can_join: field('m.room.guest_access', 'guest_access') === 'can_join',
    ...Object.fromEntries(Object.entries(optional).filter(([, value]) => value !== undefined)),
  }
}
