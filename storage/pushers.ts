import { sql, type Kysely } from 'kysely'
import type { PushContext, PushEvent } from './push-evaluator.js'
import type { Database } from './schema.js'

/**
 * Pushers (client-server API "Push notifications"): where a user's notifications go. A pusher is
 * identified by (app_id, pushkey, user); it belongs to the access token that set it and is
 * deleted with it (migration 0016). Each one keeps the events position up to which the push
 * sender (api/push-sender.ts) has handled the stream for it, so that a restart neither repeats
 * nor skips a notification that a gateway took.
 */

/** A pusher as clients set and read it (`POST /pushers/set`, `GET /pushers`). */
export interface PusherFields {
  readonly kind: string
  readonly app_id: string
  readonly pushkey: string
  readonly app_display_name: string
  readonly device_display_name: string
  readonly profile_tag?: string
  readonly lang: string
  readonly data: Readonly<Record<string, unknown>>
}

/** A pusher as the push sender works with it. */
export interface StoredPusher extends PusherFields {
  readonly id: bigint
  readonly userId: string
  readonly createdTs: number
  readonly lastStreamOrdering: bigint
  readonly failingSince: number | undefined
}

/**
 * Adds or updates the user's pusher of (app_id, pushkey). Unless `append`, the same app_id and
 * pushkey of other users are removed (spec: one device, one user, unless asked). A new pusher
 * starts at the current end of the events stream: it pushes what comes after.
 *
 * @example
 * await setPusher(db, { userId, tokenId, append: false, now: Date.now(), pusher: { kind: 'http', app_id: 'im.app', pushkey: 'k', … } })
 */
export async function setPusher(db: Kysely<Database>, p: { userId: string; tokenId: bigint; pusher: PusherFields; append: boolean; now: number }): Promise<void> {
  const { pusher } = p
  await db.transaction().execute(async (trx) => {
    if (!p.append) {
      await trx.deleteFrom('pushers').where('app_id', '=', pusher.app_id).where('pushkey', '=', pusher.pushkey).where('user_id', '<>', p.userId).execute()
    }
    const fields = {
      kind: pusher.kind,
      access_token_id: p.tokenId,
      app_display_name: pusher.app_display_name,
      device_display_name: pusher.device_display_name,
      profile_tag: pusher.profile_tag ?? null,
      lang: pusher.lang,
      data: JSON.stringify(pusher.data),
    }
    await trx
      .insertInto('pushers')
      .values({
        ...fields,
        user_id: p.userId,
        app_id: pusher.app_id,
        pushkey: pusher.pushkey,
        created_ts: p.now,
        last_stream_ordering: sql<bigint>`(SELECT coalesce(max(stream_ordering), 0) FROM events)`,
      })
      .onConflict((oc) => oc.columns(['app_id', 'pushkey', 'user_id']).doUpdateSet(fields))
      .execute()
  })
}

/** Removes the user's pusher of (app_id, pushkey); true if there was one. */
export async function deletePusher(db: Kysely<Database>, userId: string, appId: string, pushkey: string): Promise<boolean> {
  const result = await db.deleteFrom('pushers').where('user_id', '=', userId).where('app_id', '=', appId).where('pushkey', '=', pushkey).executeTakeFirst()
  return result.numDeletedRows > 0n
}

/** The user's pushers, as `GET /pushers` lists them. */
export async function pushersOf(db: Kysely<Database>, userId: string): Promise<PusherFields[]> {
  return (await storedPushers(db, userId)).map(({ kind, app_id, pushkey, app_display_name, device_display_name, profile_tag, lang, data }) => ({
    kind,
    app_id,
    pushkey,
    app_display_name,
    device_display_name,
    ...(profile_tag !== undefined && { profile_tag }),
    lang,
    data,
  }))
}

/** Every pusher (of `userId` only, when given), oldest first. */
export async function storedPushers(db: Kysely<Database>, userId?: string): Promise<StoredPusher[]> {
  let query = db.selectFrom('pushers').selectAll().orderBy('id')
  if (userId !== undefined) query = query.where('user_id', '=', userId)
  return (await query.execute()).map((row) => ({
    id: row.id,
    userId: row.user_id,
    kind: row.kind,
    app_id: row.app_id,
    pushkey: row.pushkey,
    app_display_name: row.app_display_name,
    device_display_name: row.device_display_name,
    ...(row.profile_tag !== null && { profile_tag: row.profile_tag }),
    lang: row.lang,
    data: row.data as Record<string, unknown>,
    createdTs: Number(row.created_ts),
    lastStreamOrdering: BigInt(row.last_stream_ordering),
    failingSince: row.failing_since === null ? undefined : Number(row.failing_since),
  }))
}

/** Those of `ids` whose pusher no longer exists. */
export async function deletedPushers(db: Kysely<Database>, ids: readonly bigint[]): Promise<Set<bigint>> {
  if (ids.length === 0) return new Set()
  const rows = await db.selectFrom('pushers').select('id').where('id', 'in', [...ids]).execute()
  const present = new Set(rows.map((r) => BigInt(r.id)))
  return new Set(ids.filter((id) => !present.has(id)))
}

/**
 * Users with pushers whose `m.read` or `m.read.private` receipt changed after `after`, and the
 * receipts stream's position read (`after` undefined: only the position).
 *
 * @example
 * const { users, position } = await receiptReaders(db, seen) // { users: ['@bob:hs'], position: 42n }
 */
export async function receiptReaders(db: Kysely<Database>, after: bigint | undefined): Promise<{ users: string[]; position: bigint }> {
  const { rows } = await sql<{ position: bigint | null; users: string[] | null }>`
    SELECT (SELECT max(stream_id) FROM receipts) AS position,
      ${after === undefined ? sql`NULL::text[]` : sql`(SELECT array_agg(DISTINCT user_id) FROM receipts
        WHERE stream_id > ${after}::int8 AND receipt_type IN ('m.read', 'm.read.private') AND user_id IN (SELECT user_id FROM pushers))`} AS users`.execute(db)
  const row = rows[0]!
  return { users: row.users ?? [], position: row.position === null ? (after ?? 0n) : BigInt(row.position) }
}

/** Records how far a pusher got, and since when it fails (undefined: it does not). */
export async function recordPusherProgress(db: Kysely<Database>, id: bigint, position: bigint, failingSince: number | undefined): Promise<void> {
  await db
    .updateTable('pushers')
    .set({ last_stream_ordering: position, failing_since: failingSince ?? null })
    .where('id', '=', id)
    .where('last_stream_ordering', '<=', position)
    .execute()
}

/** An event a pusher's user may be notified of, with the users to evaluate it for. */
export interface PushCandidate {
  readonly streamOrdering: bigint
  readonly eventId: string
  readonly roomId: string
  readonly event: PushEvent
  /** Users with pushers joined to or invited into the room now, the sender excepted. */
  readonly users: readonly string[]
}

/**
 * The events after `after` up to `upTo` (at most `limit`, in stream order), and of them those in
 * rooms where a user with a pusher is joined or invited now, each with those users. `reached`:
 * the position the read covers (`upTo`, or the last event of a full batch). Event JSON is read
 * only for the candidates.
 *
 * @example
 * const { candidates, reached } = await pushCandidates(db, { after: 100n, upTo: 140n, limit: 1000 })
 */
export async function pushCandidates(db: Kysely<Database>, q: { after: bigint; upTo: bigint; limit: number }): Promise<{ candidates: PushCandidate[]; reached: bigint }> {
  if (q.after >= q.upTo) return { candidates: [], reached: q.upTo }
  const { rows } = await sql<{ stream_ordering: string; event_id: string | null; room_id: string | null; sender: string | null; json: string | null; users: string[] | null; last: string | null; n: number }>`
    WITH batch AS (
      SELECT stream_ordering, event_id, room_id, sender FROM events
      WHERE stream_ordering > ${q.after}::int8 AND stream_ordering <= ${q.upTo}::int8 AND NOT outlier
      ORDER BY stream_ordering LIMIT ${q.limit}
    ), members AS (
      SELECT c.room_id, array_agg(c.state_key) AS users FROM current_state_events c
      WHERE c.room_id IN (SELECT DISTINCT room_id FROM batch) AND c.type = 'm.room.member' AND c.membership IN ('join', 'invite')
        AND EXISTS (SELECT 1 FROM pushers p WHERE p.user_id = c.state_key)
      GROUP BY c.room_id
    )
    SELECT b.stream_ordering, b.event_id, b.room_id, b.sender, j.json, m.users, NULL AS last, 0 AS n
    FROM batch b JOIN members m ON m.room_id = b.room_id JOIN event_json j ON j.event_id = b.event_id
    UNION ALL
    SELECT 0, NULL, NULL, NULL, NULL, NULL, max(stream_ordering)::text, count(*)::int4 FROM batch
    ORDER BY 1`.execute(db)
  const summary = rows.find((row) => row.event_id === null)!
  const reached = summary.n === q.limit ? BigInt(summary.last!) : q.upTo
  const candidates = rows
    .filter((row) => row.event_id !== null)
    .map((row) => ({
      streamOrdering: BigInt(row.stream_ordering),
      eventId: row.event_id!,
      roomId: row.room_id!,
      event: JSON.parse(row.json!) as PushEvent,
      users: row.users!.filter((user) => user !== row.sender),
    }))
    .filter((c) => c.users.length > 0)
  return { candidates, reached }
}

/** What the push sender needs of a room: the rules' context per user, and names for the notification. */
export interface PushRoom {
  readonly memberCount: number
  readonly powerLevels: PushContext['powerLevels']
  readonly name: string | undefined
  /** Display names of the members asked for. */
  readonly displayNames: ReadonlyMap<string, string>
}

/** The context of `userId`'s rules in `room` (storage/push-evaluator.ts). */
export function contextIn(room: PushRoom, userId: string): PushContext {
  return { userId, displayName: room.displayNames.get(userId), memberCount: room.memberCount, powerLevels: room.powerLevels }
}

/** The rooms' push context (display names of `members`), in one round trip. */
export async function pushContext(db: Kysely<Database>, q: { rooms: readonly string[]; members: readonly string[] }): Promise<Map<string, PushRoom>> {
  const [state, counts] = await Promise.all([
    sql<{ room_id: string; type: string; state_key: string; json: string }>`
      SELECT c.room_id, c.type, c.state_key, j.json FROM current_state_events c JOIN event_json j ON j.event_id = c.event_id
      WHERE c.room_id = ANY(${[...q.rooms]}::text[])
        AND ((c.type IN ('m.room.power_levels', 'm.room.name') AND c.state_key = '')
             OR (c.type = 'm.room.member' AND c.state_key = ANY(${[...q.members]}::text[])))`.execute(db),
    sql<{ room_id: string; n: number }>`
      SELECT room_id, count(*)::int4 AS n FROM current_state_events
      WHERE room_id = ANY(${[...q.rooms]}::text[]) AND type = 'm.room.member' AND membership = 'join'
      GROUP BY room_id`.execute(db),
  ])
  const rooms = new Map<string, { memberCount: number; powerLevels: PushContext['powerLevels']; name: string | undefined; displayNames: Map<string, string> }>()
  for (const roomId of q.rooms) rooms.set(roomId, { memberCount: 0, powerLevels: undefined, name: undefined, displayNames: new Map() })
  for (const row of counts.rows) rooms.get(row.room_id)!.memberCount = row.n
  for (const row of state.rows) {
    const room = rooms.get(row.room_id)!
    const content = ((JSON.parse(row.json) as { content?: Record<string, unknown> }).content ?? {}) as Record<string, unknown>
    if (row.type === 'm.room.power_levels') room.powerLevels = content
    else if (row.type === 'm.room.name') room.name = typeof content['name'] === 'string' && content['name'] !== '' ? content['name'] : undefined
    else if (typeof content['displayname'] === 'string') room.displayNames.set(row.state_key, content['displayname'])
  }
  return rooms
}
