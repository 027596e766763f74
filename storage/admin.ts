import { sql, type Kysely, type RawBuilder } from 'kysely'
import type { Database } from './schema.js'
import { getStateEntries, type RoomStateEntry } from './state-entries.js'

/**
 * The reads behind Synapse's admin API (api/routes/admin.ts): accounts and rooms as a server
 * admin sees them, in the shapes Synapse answers, so that tools built for it (synapse-admin,
 * scripts) work unchanged.
 */

type Db = Kysely<Database>

/** One account as `GET /_synapse/admin/v2/users` lists it. */
export interface AdminUserSummary {
  readonly name: string
  readonly user_type: null
  readonly is_guest: false
  readonly admin: boolean
  readonly deactivated: boolean
  readonly shadow_banned: boolean
  readonly locked: false
  readonly erased: false
  readonly approved: true
  readonly displayname: string | null
  readonly avatar_url: string | null
  /** Milliseconds since the epoch. */
  readonly creation_ts: number
  /** The latest a device of the user was seen, or null. */
  readonly last_seen_ts: number | null
}

export const adminUserOrders = ['name', 'displayname', 'creation_ts', 'admin', 'deactivated', 'last_seen_ts'] as const
export type AdminUserOrder = (typeof adminUserOrders)[number]

export interface AdminUsersQuery {
  readonly offset: number
  readonly limit: number
  /** Only users whose ID or display name contains this, case-insensitively. */
  readonly name?: string
  /** Whether deactivated accounts are listed too (Synapse's default: no). */
  readonly deactivated: boolean
  /** Only admins (true) or only others (false). */
  readonly admins?: boolean
  readonly orderBy: AdminUserOrder
  readonly dir: 'f' | 'b'
}

const lastSeen = sql<string | null>`(SELECT max(d.last_seen_ts) FROM devices d WHERE d.user_id = u.user_id)`

function usersBase(db: Db, q: Pick<AdminUsersQuery, 'name' | 'deactivated' | 'admins'>) {
  return db
    .selectFrom('users as u')
    .leftJoin('profiles as p', 'p.user_id', 'u.user_id')
    .$if(!q.deactivated, (qb) => qb.where('u.deactivated', '=', false))
    .$if(q.admins !== undefined, (qb) => qb.where('u.admin', '=', q.admins === true))
    .$if(q.name !== undefined && q.name !== '', (qb) =>
      qb.where((eb) => eb.or([eb(sql`strpos(lower(u.user_id), lower(${q.name}))`, '>', 0), eb(sql`strpos(lower(coalesce(p.displayname, '')), lower(${q.name}))`, '>', 0)])),
    )
}

/**
 * A page of accounts in `orderBy` order (ties by user ID), and how many match in all.
 *
 * @example
 * const { users, total } = await adminUsers(db, { offset: 0, limit: 100, deactivated: false, orderBy: 'name', dir: 'f' })
 */
export async function adminUsers(db: Db, q: AdminUsersQuery): Promise<{ users: AdminUserSummary[]; total: number }> {
  const orderColumn: Record<AdminUserOrder, RawBuilder<unknown>> = {
    name: sql`u.user_id`,
    displayname: sql`p.displayname`,
    creation_ts: sql`u.created_ts`,
    admin: sql`u.admin`,
    deactivated: sql`u.deactivated`,
    last_seen_ts: lastSeen,
  }
  const direction = q.dir === 'b' ? sql`DESC NULLS LAST` : sql`ASC NULLS FIRST`
  const [rows, total] = await Promise.all([
    usersBase(db, q)
      .select(['u.user_id', 'u.admin', 'u.deactivated', 'u.shadow_banned', 'u.created_ts', 'p.displayname', 'p.avatar_url', lastSeen.as('last_seen_ts')])
      .orderBy(sql`${orderColumn[q.orderBy]} ${direction}`)
      .orderBy('u.user_id', q.dir === 'b' ? 'desc' : 'asc')
      .limit(q.limit)
      .offset(q.offset)
      .execute(),
    usersBase(db, q).select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow(),
  ])
  return { users: rows.map(userSummary), total: Number(total.n) }
}

/**
 * One account as `GET /_synapse/admin/v2/users/{userId}` shows it, or undefined.
 *
 * @example
 * (await adminUser(db, '@alice:example.org'))?.admin // false
 */
export async function adminUser(db: Db, userId: string): Promise<(AdminUserSummary & { threepids: []; external_ids: [] }) | undefined> {
  const row = await usersBase(db, { deactivated: true })
    .select(['u.user_id', 'u.admin', 'u.deactivated', 'u.shadow_banned', 'u.created_ts', 'p.displayname', 'p.avatar_url', lastSeen.as('last_seen_ts')])
    .where('u.user_id', '=', userId)
    .executeTakeFirst()
  return row === undefined ? undefined : { ...userSummary(row), threepids: [], external_ids: [] }
}

function userSummary(row: {
  user_id: string
  admin: boolean
  deactivated: boolean
  shadow_banned: boolean
  created_ts: bigint | string | number
  displayname: string | null
  avatar_url: string | null
  last_seen_ts: string | bigint | null
}): AdminUserSummary {
  return {
    name: row.user_id,
    user_type: null,
    is_guest: false,
    admin: row.admin,
    deactivated: row.deactivated,
    shadow_banned: row.shadow_banned,
    locked: false,
    erased: false,
    approved: true,
    displayname: row.displayname,
    avatar_url: row.avatar_url,
    creation_ts: Number(row.created_ts),
    last_seen_ts: row.last_seen_ts === null ? null : Number(row.last_seen_ts),
  }
}

/** One room as `GET /_synapse/admin/v1/rooms` lists it. */
export interface AdminRoomSummary {
  readonly room_id: string
  readonly name: string | null
  readonly canonical_alias: string | null
  readonly joined_members: number
  readonly joined_local_members: number
  readonly version: string
  readonly creator: string
  readonly encryption: string | null
  readonly federatable: boolean
  readonly public: boolean
  readonly join_rules: string | null
  readonly guest_access: string | null
  readonly history_visibility: string | null
  readonly state_events: number
  readonly room_type: string | null
}

export const adminRoomOrders = ['name', 'joined_members', 'joined_local_members', 'state_events', 'version', 'creator', 'public'] as const
export type AdminRoomOrder = (typeof adminRoomOrders)[number]

export interface AdminRoomsQuery {
  readonly offset: number
  readonly limit: number
  /** Only rooms whose name, canonical alias or ID contains this, case-insensitively. */
  readonly searchTerm?: string
  readonly orderBy: AdminRoomOrder
  readonly dir: 'f' | 'b'
}

const stateField = (type: string, field: string) =>
  sql<string | null>`(SELECT j.json::jsonb -> 'content' ->> ${field} FROM current_state_events c JOIN event_json j ON j.event_id = c.event_id
    WHERE c.room_id = r.room_id AND c.type = ${type} AND c.state_key = '')`
const joinedCount = sql<string>`(SELECT count(*) FROM current_state_events m WHERE m.room_id = r.room_id AND m.type = 'm.room.member' AND m.membership = 'join')`
const stateCount = sql<string>`(SELECT count(*) FROM current_state_events s WHERE s.room_id = r.room_id)`

function roomsBase(db: Db, searchTerm: string | undefined) {
  return db.selectFrom('rooms as r').$if(searchTerm !== undefined && searchTerm !== '', (qb) =>
    qb.where((eb) =>
      eb.or([
        eb(sql`strpos(lower(r.room_id), lower(${searchTerm}))`, '>', 0),
        eb(sql`strpos(lower(coalesce(${stateField('m.room.name', 'name')}, '')), lower(${searchTerm}))`, '>', 0),
        eb(sql`strpos(lower(coalesce(${stateField('m.room.canonical_alias', 'alias')}, '')), lower(${searchTerm}))`, '>', 0),
      ]),
    ),
  )
}

/**
 * A page of rooms in `orderBy` order (ties by room ID), with their summaries, and how many
 * match in all. Every member is local (no federation), so `joined_local_members` is
 * `joined_members` and `federatable` is the create event's `m.federate`.
 *
 * @example
 * const { rooms, total } = await adminRooms(db, { offset: 0, limit: 100, orderBy: 'name', dir: 'f' })
 */
export async function adminRooms(db: Db, q: AdminRoomsQuery): Promise<{ rooms: AdminRoomSummary[]; total: number }> {
  const orderColumn: Record<AdminRoomOrder, RawBuilder<unknown>> = {
    name: stateField('m.room.name', 'name'),
    joined_members: joinedCount,
    joined_local_members: joinedCount,
    state_events: stateCount,
    version: sql`r.room_version`,
    creator: sql`r.creator`,
    public: sql`r.is_public`,
  }
  const direction = q.dir === 'b' ? sql`DESC NULLS LAST` : sql`ASC NULLS FIRST`
  const [rows, total] = await Promise.all([
    roomsBase(db, q.searchTerm)
      .select('r.room_id')
      .orderBy(sql`${orderColumn[q.orderBy]} ${direction}`)
      .orderBy('r.room_id', q.dir === 'b' ? 'desc' : 'asc')
      .limit(q.limit)
      .offset(q.offset)
      .execute(),
    roomsBase(db, q.searchTerm).select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow(),
  ])
  const summaries = await adminRoomSummaries(
    db,
    rows.map((row) => row.room_id),
  )
  return { rooms: rows.flatMap((row) => summaries.get(row.room_id) ?? []), total: Number(total.n) }
}

const summaryKeys = ['m.room.create', 'm.room.name', 'm.room.canonical_alias', 'm.room.encryption', 'm.room.join_rules', 'm.room.guest_access', 'm.room.history_visibility', 'm.room.topic', 'm.room.avatar'].map(
  (type) => ({ type, stateKey: '' }),
)

/**
 * The summaries of `roomIds` (rooms that do not exist are absent), with `topic` and `avatar`,
 * as `GET /_synapse/admin/v1/rooms/{roomId}` shows a room.
 *
 * @example
 * (await adminRoomSummaries(db, [roomId])).get(roomId)?.joined_members // 3
 */
export async function adminRoomSummaries(db: Db, roomIds: readonly string[]): Promise<Map<string, AdminRoomSummary & { topic: string | null; avatar: string | null }>> {
  if (roomIds.length === 0) return new Map()
  const [rooms, entries] = await Promise.all([
    db
      .selectFrom('rooms as r')
      .select(['r.room_id', 'r.room_version', 'r.creator', 'r.is_public', joinedCount.as('joined'), stateCount.as('state_events')])
      .where('r.room_id', 'in', [...roomIds])
      .execute(),
    getStateEntries(db, roomIds, summaryKeys),
  ])
  const byRoom = new Map<string, RoomStateEntry[]>()
  for (const entry of entries) byRoom.set(entry.roomId, [...(byRoom.get(entry.roomId) ?? []), entry])
  return new Map(
    rooms.map((room) => {
      const state = byRoom.get(room.room_id) ?? []
      const field = (type: string, key: string): string | null => {
        const value = state.find((s) => s.type === type)?.content[key]
        return typeof value === 'string' ? value : null
      }
      const joined = Number(room.joined)
      return [
        room.room_id,
        {
          room_id: room.room_id,
          name: field('m.room.name', 'name'),
          canonical_alias: field('m.room.canonical_alias', 'alias'),
          joined_members: joined,
          joined_local_members: joined,
          version: room.room_version,
          creator: room.creator,
          encryption: field('m.room.encryption', 'algorithm'),
          federatable: state.find((s) => s.type === 'm.room.create')?.content['m.federate'] !== false,
          public: room.is_public,
          join_rules: field('m.room.join_rules', 'join_rule'),
          guest_access: field('m.room.guest_access', 'guest_access'),
          history_visibility: field('m.room.history_visibility', 'history_visibility'),
          state_events: Number(room.state_events),
          room_type: field('m.room.create', 'type'),
          topic: field('m.room.topic', 'topic'),
          avatar: field('m.room.avatar', 'url'),
        },
      ]
    }),
  )
}

/**
 * The users joined to `roomId`, sorted.
 *
 * @example
 * await adminRoomMembers(db, '!abc:example.org') // ['@alice:example.org', '@bob:example.org']
 */
export async function adminRoomMembers(db: Db, roomId: string): Promise<string[]> {
  const rows = await db
    .selectFrom('current_state_events')
    .select('state_key')
    .where('room_id', '=', roomId)
    .where('type', '=', 'm.room.member')
    .where('membership', '=', 'join')
    .orderBy('state_key')
    .execute()
  return rows.map((row) => row.state_key)
}

/**
 * Blocks `roomId` (it need not exist here): local users may no longer join, knock on or be
 * invited to it (api/routes/rooms.ts checks `roomBlock`). Blocking again keeps the first block.
 *
 * @example
 * await blockRoom(db, '!spam:example.org', '@admin:example.org', Date.now())
 */
export async function blockRoom(db: Db, roomId: string, adminId: string, now: number): Promise<void> {
  await db.insertInto('blocked_rooms').values({ room_id: roomId, user_id: adminId, blocked_ts: now }).onConflict((oc) => oc.column('room_id').doNothing()).execute()
}

/** Lifts the block of `roomId`; false when it was not blocked. */
export async function unblockRoom(db: Db, roomId: string): Promise<boolean> {
  const result = await db.deleteFrom('blocked_rooms').where('room_id', '=', roomId).executeTakeFirst()
  return result.numDeletedRows > 0n
}

/**
 * Who blocked `roomId`, or undefined when it is not blocked.
 *
 * @example
 * await roomBlock(db, '!spam:example.org') // { userId: '@admin:example.org' }
 */
export async function roomBlock(db: Db, roomId: string): Promise<{ userId: string } | undefined> {
  const row = await db.selectFrom('blocked_rooms').select('user_id').where('room_id', '=', roomId).executeTakeFirst()
  return row === undefined ? undefined : { userId: row.user_id }
}

/**
 * Deletes a room and everything stored of its events, in one transaction (Synapse's purge of a
 * deleted room): events, their JSON, the DAG, state, memberships, relations, search entries,
 * transaction IDs, redactions, aliases and the room's head row. Left in place, because their
 * tables carry stream positions (the highest stream ID is a position, which must never go
 * backwards): receipts, typing and users' room account data; they name a room that no longer
 * exists and nothing reads them. The caller makes sure no local user is still in the room.
 *
 * @returns how many events were deleted.
 * @example
 * await purgeRoom(db, '!spam:example.org') // 1234
 */
export async function purgeRoom(db: Db, roomId: string): Promise<number> {
  return db.transaction().execute(async (trx) => {
    await lockRoomHistory(trx, roomId)
    // The room's head row first: a persister writing to it meanwhile waits, then finds no room.
    await trx.selectFrom('rooms').select('room_id').where('room_id', '=', roomId).forUpdate().execute()
    const roomEvents = trx.selectFrom('events').select('event_id').where('room_id', '=', roomId)
    await trx.deleteFrom('redactions').where('event_id', 'in', roomEvents).execute()
    await trx.deleteFrom('event_json').where('event_id', 'in', roomEvents).execute()
    for (const table of ['event_edges', 'event_backward_extremities', 'state_events', 'current_state_events', 'room_memberships', 'event_txn_ids', 'event_relations', 'event_search', 'room_aliases'] as const) {
      await trx.deleteFrom(table).where('room_id', '=', roomId).execute()
    }
    const deleted = await trx.deleteFrom('events').where('room_id', '=', roomId).executeTakeFirst()
    await trx.deleteFrom('rooms').where('room_id', '=', roomId).execute()
    return Number(deleted.numDeletedRows)
  })
}

/** What shutting a room down did (Synapse's `shutdown_room`, and the v1 answer). */
export interface RoomShutdown {
  readonly kicked_users: string[]
  readonly failed_to_kick_users: string[]
  readonly local_aliases: string[]
  readonly new_room_id: string | null
}

export type RoomDeletionStatus = 'shutting_down' | 'purging' | 'complete' | 'failed'

/** One asynchronous deletion as `…/delete_status` shows it. */
export interface RoomDeletion {
  readonly delete_id: string
  readonly room_id: string
  readonly status: RoomDeletionStatus
  readonly shutdown_room?: RoomShutdown
  readonly error?: string
}

/** Records a deletion that starts now (status `shutting_down`), with the request's options for resuming it. */
export async function startRoomDeletion(db: Db, deletion: { deleteId: string; roomId: string; now: number; params: object }): Promise<void> {
  await db
    .insertInto('room_deletions')
    .values({ delete_id: deletion.deleteId, room_id: deletion.roomId, status: 'shutting_down', started_ts: deletion.now, params: JSON.stringify(deletion.params) })
    .execute()
}

/** A deletion as its runner reads it: where it got to, and the options it was asked with. */
export interface RoomDeletionWork {
  readonly roomId: string
  readonly status: RoomDeletionStatus
  readonly params: Readonly<Record<string, unknown>>
  readonly shutdown?: RoomShutdown
}

/**
 * Runs `work` on the deletion while holding its claim, a session advisory lock of its ID on one
 * connection: a process that dies lets go of it with its connection, so another can resume the
 * deletion. The deletion is read after the claim is taken (it may have finished meanwhile).
 *
 * @returns false, without running `work`, when another session holds the claim or the deletion
 *   is not there.
 * @example
 * await claimRoomDeletion(db, deleteId, async ({ status, params }) => { … })
 */
export async function claimRoomDeletion(db: Db, deleteId: string, work: (deletion: RoomDeletionWork) => Promise<void>): Promise<boolean> {
  return withClaim(db, `myelin.room_deletion.${deleteId}`, async () => {
    const row = await db.selectFrom('room_deletions').select(['room_id', 'status', 'params', 'shutdown_room']).where('delete_id', '=', deleteId).executeTakeFirst()
    if (row === undefined) return false
    await work({
      roomId: row.room_id,
      status: row.status as RoomDeletionStatus,
      params: (row.params ?? {}) as Record<string, unknown>,
      ...(row.shutdown_room !== null && { shutdown: row.shutdown_room as RoomShutdown }),
    })
    return true
  })
}

/**
 * Takes, until the transaction ends, the lock that deleting a room's history holds (a purge's
 * chunk, the room's deletion), so that those never interleave: a chunk never puts back a
 * backward extremity of a room being deleted. Persisters do not take it.
 */
export async function lockRoomHistory(trx: Db, roomId: string): Promise<void> {
  await sql`SELECT pg_advisory_xact_lock(hashtextextended(${`myelin.room_history.${roomId}`}, 0))`.execute(trx)
}

/**
 * Runs `work` while holding a session advisory lock named `name` on one connection, so that one
 * process at a time runs a long job; a process that dies lets go with its connection.
 *
 * @returns false, without running `work`, when another session holds the lock; else what `work` returns.
 * @example
 * await withClaim(db, `myelin.history_purge.${purgeId}`, async () => { …; return true })
 */
export async function withClaim(db: Db, name: string, work: () => Promise<boolean>): Promise<boolean> {
  const key = sql`hashtextextended(${name}, 0)`
  return db.connection().execute(async (conn) => {
    const { rows } = await sql<{ claimed: boolean }>`SELECT pg_try_advisory_lock(${key}) AS claimed`.execute(conn)
    if (rows[0]?.claimed !== true) return false
    try {
      return await work()
    } finally {
      await sql`SELECT pg_advisory_unlock(${key})`.execute(conn)
    }
  })
}

/** IDs of the deletions not finished (`shutting_down` or `purging`), oldest first. */
export async function unfinishedRoomDeletions(db: Db): Promise<string[]> {
  const rows = await db.selectFrom('room_deletions').select('delete_id').where('status', 'in', ['shutting_down', 'purging']).orderBy('started_ts').execute()
  return rows.map((row) => row.delete_id)
}

/** Moves a deletion on: its status, and what the shutdown did or why it failed once known. */
export async function updateRoomDeletion(db: Db, deleteId: string, change: { status: RoomDeletionStatus; shutdown?: RoomShutdown; error?: string }): Promise<void> {
  await db
    .updateTable('room_deletions')
    .set({
      status: change.status,
      ...(change.shutdown !== undefined && { shutdown_room: JSON.stringify(change.shutdown) }),
      ...(change.error !== undefined && { error: change.error }),
    })
    .where('delete_id', '=', deleteId)
    .execute()
}

/**
 * Deletions by ID, or of a room (oldest first).
 *
 * @example
 * await roomDeletions(db, { roomId: '!spam:example.org' }) // [{ delete_id, room_id, status: 'complete', shutdown_room }]
 */
export async function roomDeletions(db: Db, which: { deleteId: string } | { roomId: string }): Promise<RoomDeletion[]> {
  const rows = await db
    .selectFrom('room_deletions')
    .select(['delete_id', 'room_id', 'status', 'shutdown_room', 'error'])
    .$if('deleteId' in which, (qb) => qb.where('delete_id', '=', (which as { deleteId: string }).deleteId))
    .$if('roomId' in which, (qb) => qb.where('room_id', '=', (which as { roomId: string }).roomId))
    .orderBy('started_ts')
    .orderBy('delete_id')
    .execute()
  return rows.map((row) => ({
    delete_id: row.delete_id,
    room_id: row.room_id,
    status: row.status as RoomDeletionStatus,
    ...(row.shutdown_room !== null && { shutdown_room: row.shutdown_room as RoomShutdown }),
    ...(row.error !== null && { error: row.error }),
  }))
}
