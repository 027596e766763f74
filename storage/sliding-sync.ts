import { sql, type Kysely, type SqlBool } from 'kysely'
import { getAccountData } from './account-data.js'
import type { JsonObject } from './events/redaction.js'
import { rowAfter, rowCoveredBy, stateWhere, toClientEvents, type Viewer } from './room-reads.js'
import type { Database } from './schema.js'
import { roomSummaries } from './space-hierarchy.js'
import type { RoomStreamToken } from './streams/room-stream-token.js'
import { membershipsAt } from './sync.js'

/**
 * What simplified sliding sync (MSC4186, api/routes/sliding-sync.ts) reads beyond /sync's room
 * sections: the user's rooms with their bump stamps (to sort the lists), whether a room is a
 * DM, and the metadata a room list shows (name, avatar, heroes, member counts, encryption, type).
 */

type Db = Kysely<Database>

/** Event types that move a room up a list (Synapse's `SLIDING_SYNC_DEFAULT_BUMP_EVENT_TYPES`). */
export const bumpEventTypes = ['m.room.create', 'm.room.message', 'm.room.encrypted', 'm.sticker', 'm.call.invite', 'm.poll.start', 'm.beacon_info'] as const

/** One of the user's rooms at a position. */
export interface ListedRoom {
  readonly roomId: string
  readonly membership: 'join' | 'invite' | 'knock'
  /**
   * The stream ordering of the room's latest bump event (`bumpEventTypes`) covered by the
   * position; of the user's membership event for an invite or a knock, or a room with none.
   */
  readonly bumpStamp: bigint
}

/**
 * The rooms the user is joined to, invited to or knocking on at `upTo`, newest bump first (ties:
 * room ID). Two round trips: the memberships, then the latest bump event of every joined room
 * (one backward index walk per room). With `known` (the bumps of an earlier read, and which
 * rooms may have had events since it), only the rooms that may have moved are walked.
 *
 * @example
 * const rooms = await listedRooms(db, '@alice:hs', tracker.currentToken())
 * rooms[0] // { roomId: '!busiest:hs', membership: 'join', bumpStamp: 1234n }
 */
export async function listedRooms(
  db: Db,
  userId: string,
  upTo: RoomStreamToken,
  known?: { readonly bumps: ReadonlyMap<string, bigint>; readonly changed: (rooms: readonly string[]) => ReadonlySet<string> | undefined },
): Promise<ListedRoom[]> {
  const memberships = [...(await membershipsAt(db, userId, upTo)).values()].filter(
    (m): m is typeof m & { membership: ListedRoom['membership'] } => m.membership === 'join' || m.membership === 'invite' || m.membership === 'knock',
  )
  const joined = memberships.filter((m) => m.membership === 'join').map((m) => m.roomId)
  const bumps = new Map<string, bigint>()
  const changed = known?.changed(joined)
  const walk = changed === undefined ? joined : joined.filter((roomId) => changed.has(roomId) || !known!.bumps.has(roomId))
  if (changed !== undefined) for (const roomId of joined) if (!changed.has(roomId) && known!.bumps.has(roomId)) bumps.set(roomId, known!.bumps.get(roomId)!)
  if (walk.length > 0) {
    const { rows } = await sql<{ room_id: string; bump: string | null }>`
      SELECT r.room_id, (
        SELECT e.stream_ordering FROM events e LEFT JOIN instances i ON i.instance_name = e.instance_name
        WHERE e.room_id = r.room_id AND e.type = ANY(${sql.val([...bumpEventTypes])}::text[]) AND e.outlier = false AND ${rowCoveredBy(upTo)}
        ORDER BY e.stream_ordering DESC LIMIT 1
      ) AS bump
      FROM unnest(${sql.val(walk)}::text[]) AS r(room_id)`.execute(db)
    for (const row of rows) if (row.bump !== null) bumps.set(row.room_id, BigInt(row.bump))
  }
  return memberships
    .map((m) => ({ roomId: m.roomId, membership: m.membership, bumpStamp: bumps.get(m.roomId) ?? m.streamOrdering }))
    .sort((a, b) => (a.bumpStamp === b.bumpStamp ? (a.roomId < b.roomId ? -1 : 1) : a.bumpStamp > b.bumpStamp ? -1 : 1))
}

/** The rooms the user's `m.direct` account data names as direct chats. */
export async function directRooms(db: Db, userId: string): Promise<ReadonlySet<string>> {
  const content = await getAccountData(db, userId, 'm.direct')
  const rooms = new Set<string>()
  for (const list of Object.values(content ?? {})) {
    if (Array.isArray(list)) for (const roomId of list) if (typeof roomId === 'string') rooms.add(roomId)
  }
  return rooms
}

/** The user's room tags (`m.tag` room account data: `{tags: {name: {order?}}}`), by room. */
export async function roomTags(db: Db, userId: string): Promise<Map<string, ReadonlySet<string>>> {
  const rows = await db.selectFrom('account_data').select(['room_id', 'content']).where('user_id', '=', userId).where('type', '=', 'm.tag').where('room_id', '<>', '').execute()
  const tags = new Map<string, ReadonlySet<string>>()
  for (const row of rows) {
    const named = (row.content as { tags?: unknown } | null)?.tags
    if (typeof named === 'object' && named !== null && !Array.isArray(named)) tags.set(row.room_id, new Set(Object.keys(named)))
  }
  return tags
}

/**
 * The children of each of `spaceIds` (as the space hierarchy takes them: the current
 * `m.space.child` events with a non-empty `via`, `roomSummaries`), by space; only spaces the
 * user is joined to are read.
 */
export async function spaceChildren(db: Db, spaceIds: readonly string[], joined: ReadonlySet<string>): Promise<Map<string, ReadonlySet<string>>> {
  const spaces = spaceIds.filter((id) => joined.has(id))
  if (spaces.length === 0) return new Map()
  const summaries = await roomSummaries(db, spaces, undefined)
  return new Map([...summaries].map(([spaceId, summary]) => [spaceId, new Set(summary.children.map((child) => child.state_key))]))
}

/** A member a room list can name an unnamed room after. */
export interface Hero {
  readonly user_id: string
  readonly displayname?: string
  readonly avatar_url?: string
}

/** What a room list shows of a room. */
export interface RoomMetadata {
  readonly name?: string
  readonly avatar?: string
  readonly canonicalAlias?: string
  readonly encrypted: boolean
  /** The create event's `type` (`m.space`…). */
  readonly roomType?: string
  readonly joinedCount: number
  readonly invitedCount: number
  /** Up to 5 joined or invited members other than the user, earliest first; only for rooms without a name. */
  readonly heroes: readonly Hero[]
}

const metadataTypes = ['m.room.name', 'm.room.avatar', 'm.room.canonical_alias', 'm.room.encryption', 'm.room.create']
const maxHeroes = 5

/**
 * The metadata of `roomIds`, from their current state (like Synapse's room list: it may be a
 * little ahead of the position a response's timelines go up to). Three statements, each over
 * all the rooms.
 *
 * @example
 * const meta = await roomMetadata(db, ['!a:hs'], '@alice:hs')
 * meta.get('!a:hs') // { name: 'Lunch', encrypted: false, joinedCount: 3, invitedCount: 0, heroes: [] }
 */
export async function roomMetadata(db: Db, roomIds: readonly string[], userId: string): Promise<Map<string, RoomMetadata>> {
  const result = new Map<string, RoomMetadata>()
  if (roomIds.length === 0) return result
  const [state, counts, members] = await Promise.all([
    db
      .selectFrom('current_state_events as c')
      .innerJoin('event_json as j', 'j.event_id', 'c.event_id')
      .select(['c.room_id', 'c.type', 'j.json'])
      .where('c.room_id', 'in', roomIds)
      .where('c.type', 'in', metadataTypes)
      .where('c.state_key', '=', '')
      .execute(),
    db
      .selectFrom('current_state_events')
      .select(['room_id', 'membership', (eb) => eb.fn.countAll<string>().as('n')])
      .where('room_id', 'in', roomIds)
      .where('type', '=', 'm.room.member')
      .where('membership', 'in', ['join', 'invite'])
      .groupBy(['room_id', 'membership'])
      .execute(),
    sql<{ room_id: string; state_key: string; json: string }>`
      SELECT room_id, state_key, json FROM (
        SELECT c.room_id, c.state_key, j.json, row_number() OVER (PARTITION BY c.room_id ORDER BY c.stream_ordering, c.state_key) AS n
        FROM current_state_events c JOIN event_json j ON j.event_id = c.event_id
        WHERE c.room_id = ANY(${sql.val([...roomIds])}::text[]) AND c.type = 'm.room.member' AND c.membership IN ('join', 'invite') AND c.state_key <> ${userId}
      ) m WHERE n <= ${maxHeroes}`.execute(db),
  ])
  const contentOf = (json: string) => ((JSON.parse(json) as { content?: Record<string, unknown> }).content ?? {}) as Record<string, unknown>
  const text = (value: unknown) => (typeof value === 'string' && value !== '' ? value : undefined)
  const byRoom = new Map<string, Map<string, Record<string, unknown>>>()
  for (const row of state) {
    const types = byRoom.get(row.room_id) ?? new Map<string, Record<string, unknown>>()
    types.set(row.type, contentOf(row.json))
    byRoom.set(row.room_id, types)
  }
  const heroes = new Map<string, Hero[]>()
  for (const row of members.rows) {
    const content = contentOf(row.json)
    const list = heroes.get(row.room_id) ?? []
    const displayname = text(content['displayname'])
    const avatar = text(content['avatar_url'])
    list.push({ user_id: row.state_key, ...(displayname !== undefined && { displayname }), ...(avatar !== undefined && { avatar_url: avatar }) })
    heroes.set(row.room_id, list)
  }
  for (const roomId of roomIds) {
    const types = byRoom.get(roomId)
    const name = text(types?.get('m.room.name')?.['name'])
    const avatar = text(types?.get('m.room.avatar')?.['url'])
    const canonicalAlias = text(types?.get('m.room.canonical_alias')?.['alias'])
    const roomType = text(types?.get('m.room.create')?.['type'])
    const count = (membership: string) => Number(counts.find((c) => c.room_id === roomId && c.membership === membership)?.n ?? 0)
    result.set(roomId, {
      ...(name !== undefined && { name }),
      ...(avatar !== undefined && { avatar }),
      ...(canonicalAlias !== undefined && { canonicalAlias }),
      encrypted: types?.has('m.room.encryption') === true,
      ...(roomType !== undefined && { roomType }),
      joinedCount: count('join'),
      invitedCount: count('invite'),
      heroes: name === undefined ? (heroes.get(roomId) ?? []) : [],
    })
  }
  return result
}

/** A `required_state` entry: `[type, state_key]`, `*` for any, and `$ME` / `$LAZY` as state keys. */
export type StatePattern = readonly [string, string]

/** Whether a state event of `type` and `stateKey` is one `patterns` ask for. */
export function requiredBy(patterns: readonly StatePattern[], type: string, stateKey: string, userId: string, lazySenders: ReadonlySet<string>): boolean {
  return patterns.some(([t, key]) => {
    if (t !== '*' && t !== type) return false
    if (key === '*') return true
    if (key === '$ME') return stateKey === userId
    if (key === '$LAZY') return type === 'm.room.member' && lazySenders.has(stateKey)
    return stateKey === key
  })
}

/**
 * The state `patterns` ask for in a room, as sliding sync clients take it (the state at the end
 * of the timeline, which they do not apply to their state themselves): the room's state at
 * `upTo`, or, with `since`, the state events after it up to `upTo` (the changes). Member events
 * are read only for the keys asked for (`$ME`, the `lazySenders` for `$LAZY`, or named) unless
 * a pattern asks for every member, so that a large room does not read its whole membership.
 *
 * `$LAZY` with `since`: the client holds the member events of `heldLazy`. Timeline senders it
 * does not hold get theirs whatever their age; those it holds (or sends now) get their changes.
 *
 * @example
 * await requiredState(db, '!a:hs', { patterns: [['m.room.name', ''], ['m.room.member', '$LAZY']], userId, lazySenders: new Set(['@bob:hs']), upTo, viewer: { userId }, now: Date.now() })
 */
export async function requiredState(
  db: Db,
  roomId: string,
  q: {
    patterns: readonly StatePattern[]
    userId: string
    lazySenders: ReadonlySet<string>
    heldLazy?: ReadonlySet<string>
    upTo: RoomStreamToken
    since?: RoomStreamToken
    viewer: Viewer
    now: number
  },
): Promise<JsonObject[]> {
  if (q.patterns.length === 0) return []
  const types = q.patterns.some((p) => p[0] === '*') ? undefined : [...new Set(q.patterns.map((p) => p[0]))]
  const memberPatterns = q.patterns.filter((p) => p[0] === '*' || p[0] === 'm.room.member')
  const lazy = memberPatterns.some((p) => p[1] === '$LAZY')
  const held = (q.since && q.heldLazy) || new Set<string>()
  const lazyKnown = new Set([...q.lazySenders, ...held])
  const memberKeys = [...new Set(memberPatterns.flatMap((p) => (p[1] === '$ME' ? [q.userId] : p[1] === '$LAZY' ? [...lazyKnown] : [p[1]])))]
  const someMembers = memberPatterns.some((p) => p[1] === '*')
    ? []
    : [sql<SqlBool>`(e.type <> 'm.room.member' OR e.state_key = ANY(${sql.val(memberKeys)}::text[]))`]
  const unheld = lazy ? [...q.lazySenders].filter((user) => !held.has(user)) : []
  const changes = !q.since
    ? []
    : unheld.length === 0
      ? [rowAfter(q.since)]
      : [sql<SqlBool>`(${rowAfter(q.since)} OR (e.type = 'm.room.member' AND e.state_key = ANY(${sql.val(unheld)}::text[])))`]
  const rows = await stateWhere(db, roomId, [rowCoveredBy(q.upTo), ...changes, ...someMembers], {
    ...(types && { types }),
    notTypes: [],
    notSenders: [],
  })
  const wanted = rows.filter((row) => requiredBy(q.patterns, row.type, row.stateKey ?? '', q.userId, lazyKnown))
  return toClientEvents(db, wanted, q.viewer, q.now)
}

/** A sliding sync connection saved for another api worker (or this one's next run) to take. */
export interface SavedConnection {
  /** The connection's key (`<user>|<device>|<conn_id>`). */
  readonly key: string
  /** Its positions and what the client holds at each, encoded by the api. */
  readonly state: string
  /** When it was last used (ms since the epoch). */
  readonly touchedTs: number
}

/**
 * Saves connections (an api worker shutting down), replacing any saved under the same keys, and
 * deletes those saved before `staleBefore` that no worker took. Rows go in chunks, so
 * thousands of connections do not make one huge statement.
 *
 * @example
 * await saveConnections(db, [{ key: '@a:hs|DEV|main', state: '{…}', touchedTs: Date.now() }], Date.now() - 30 * 60_000)
 */
export async function saveConnections(db: Db, connections: readonly SavedConnection[], staleBefore: number): Promise<void> {
  await db.deleteFrom('sliding_sync_connections').where('touched_ts', '<', BigInt(staleBefore)).execute()
  for (let i = 0; i < connections.length; i += 500) {
    const chunk = connections.slice(i, i + 500)
    await sql`
      INSERT INTO sliding_sync_connections (conn_key, state, touched_ts)
      SELECT * FROM unnest(${chunk.map((c) => c.key)}::text[], ${chunk.map((c) => c.state)}::text[], ${chunk.map((c) => c.touchedTs)}::int8[])
      ON CONFLICT (conn_key) DO UPDATE SET state = excluded.state, touched_ts = excluded.touched_ts`.execute(db)
  }
}

/**
 * Takes the connection saved under `key`, if one was and it was used at or after `notBefore`:
 * the row is deleted, so exactly one worker takes it.
 *
 * @example
 * const saved = await takeConnection(db, '@a:hs|DEV|main', Date.now() - 30 * 60_000) // SavedConnection | undefined
 */
export async function takeConnection(db: Db, key: string, notBefore: number): Promise<SavedConnection | undefined> {
  const row = await db.deleteFrom('sliding_sync_connections').where('conn_key', '=', key).returning(['state', 'touched_ts']).executeTakeFirst()
  if (row === undefined || Number(row.touched_ts) < notBefore) return undefined
  return { key, state: row.state, touchedTs: Number(row.touched_ts) }
}
