import { sql, type Kysely, type RawBuilder, type SqlBool } from 'kysely'
import { lockOrderedStream } from './ordered-streams.js'
import { sharesRoomSql } from './shared-rooms.js'
import type { Database, PresenceTable } from './schema.js'

/**
 * Presence (client-server API "Presence"), stored in PostgreSQL so that every process of a
 * deployment sees the same: a status set through one api worker is read, and shown in /sync,
 * through any other. A user with no row is `offline`.
 *
 * What changes a user's presence:
 * - `set` (PUT /presence/{userId}/status): the state and status message the user chose
 *   (`status_msg` absent clears it);
 * - `sync` (/sync with `set_presence` `online`, the default, or `unavailable`): an offline user
 *   becomes online (or unavailable, when asked); a user who chose `unavailable` stays so while
 *   syncing with `online`;
 * - `active` (the user sent an event): an unavailable user becomes online again.
 * Each keeps the user connected (`online_until_ts`) for `connectedTimeoutMs` past what the
 * caller names; a user not seen in time is set offline by the background sweep
 * (`expirePresence`), as Synapse does 30 s after the last sync.
 *
 * Activity (`last_active_ts`, shown as `last_active_ago` and `currently_active`) is what the
 * user did: sends, and choosing `online`; coming online by syncing counts once, staying
 * connected does not (as Synapse). An online user without activity for `idleAfterMs` becomes
 * `unavailable` (the sweep's `idlePresence`, Synapse's idle timer), and a sync alone does not
 * bring them back: their next send does.
 *
 * Stream: a row's stream ID (the `presence` stream, storage/ordered-streams.ts) moves only when
 * what others see changes: the state or the status message. Keeping a user connected and their
 * last activity are written without moving it, under the row's lock only, so the frequent
 * writes of syncing users take no stream lock.
 */

export const presenceStates = ['online', 'unavailable', 'offline'] as const
export type PresenceState = (typeof presenceStates)[number]

/** How long a user counts as connected after their last sync or presence update ends. */
export const connectedTimeoutMs = 30_000
/** `currently_active` while the last activity is at most this old (Synapse's granularity). */
export const currentlyActiveMs = 60_000
/** An online user without activity this long becomes unavailable (Synapse's IDLE_TIMER). */
export const idleAfterMs = 5 * 60_000

/** A user's presence as the client-server API shows it (GET status, `m.presence` content). */
export interface PresenceStatus {
  readonly presence: PresenceState
  readonly status_msg?: string
  readonly last_active_ago?: number
  readonly currently_active?: boolean
}

/** One reason to update a user's presence (see the module comment). */
export type PresenceUpdate =
  | { readonly kind: 'set'; readonly state: PresenceState; readonly statusMsg?: string }
  | { readonly kind: 'sync'; readonly state: Exclude<PresenceState, 'offline'>; readonly connectedUntil: number }
  | { readonly kind: 'active' }

type PresenceRow = Pick<PresenceTable, 'state' | 'status_msg'> & { last_active_ts: bigint | string; online_until_ts: bigint | string }

/**
 * Applies `update` for `userId` at `now`.
 *
 * @returns whether others see a change (the stream moved).
 * @example
 * await updatePresence(db, '@a:hs', { kind: 'sync', state: 'online', connectedUntil: now + 30_000 }, now) // true: was offline
 */
export async function updatePresence(db: Kysely<Database>, userId: string, update: PresenceUpdate, now: number): Promise<boolean> {
  const row = await refreshUnchanged(db, userId, update, now)
  if (row === 'refreshed') return false
  // Activity alone never creates a row (see `nextRow`): no row, nothing to lock for.
  if (row === 'absent' && update.kind === 'active') return false
  return db.transaction().execute(async (trx) => {
    await lockOrderedStream(trx, 'presence')
    const { rows } = await sql<PresenceRow>`
      SELECT state, status_msg, last_active_ts, online_until_ts FROM presence WHERE user_id = ${userId} FOR UPDATE`.execute(trx)
    const before = rows[0]
    const after = nextRow(before, update, now)
    if (after === undefined) return false
    const moved = before === undefined || before.state !== after.state || before.status_msg !== after.status_msg
    await sql`
      INSERT INTO presence AS p (user_id, state, status_msg, last_active_ts, online_until_ts, stream_id)
      VALUES (${userId}, ${after.state}, ${after.status_msg}, ${after.lastActive}, ${after.onlineUntil}, nextval('presence_stream_seq'))
      ON CONFLICT (user_id) DO UPDATE
        SET state = excluded.state, status_msg = excluded.status_msg, last_active_ts = excluded.last_active_ts,
            online_until_ts = excluded.online_until_ts, stream_id = ${moved ? sql`excluded.stream_id` : sql`p.stream_id`}`.execute(trx)
    return moved
  })
}

/**
 * The common case without the stream lock, in one statement: a sync or an activity that changes
 * nothing others see only extends the connection and the last activity (`refreshed`). Otherwise
 * the caller takes the locked path, told whether the user has a row at all (`absent`: a user who
 * never connected, as senders that do not sync) or it would change (`changed`).
 */
async function refreshUnchanged(db: Kysely<Database>, userId: string, update: PresenceUpdate, now: number): Promise<'refreshed' | 'absent' | 'changed'> {
  if (update.kind === 'set') return 'changed'
  // Sync as online: an online or unavailable user stays so; as unavailable: only an unavailable
  // one. Activity: an online user stays online (an offline one too: sends alone do not connect).
  const unchangedStates: readonly PresenceState[] =
    update.kind === 'active' ? ['online', 'offline'] : update.state === 'online' ? ['online', 'unavailable'] : ['unavailable']
  const until = update.kind === 'sync' ? update.connectedUntil + connectedTimeoutMs : 0
  const { rows } = await sql<{ refreshed: boolean; present: boolean }>`
    WITH refreshed AS (
      UPDATE presence SET online_until_ts = GREATEST(online_until_ts, ${until}::int8),
                          last_active_ts = CASE WHEN ${update.kind === 'active'} THEN ${now}::int8 ELSE last_active_ts END
      WHERE user_id = ${userId} AND state = ANY(${unchangedStates}::text[])
      RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM refreshed) AS refreshed, EXISTS (SELECT 1 FROM presence WHERE user_id = ${userId}) AS present`.execute(db)
  const row = rows[0]
  return row?.refreshed === true ? 'refreshed' : row?.present === true ? 'changed' : 'absent'
}

/** The row after `update` (undefined: nothing to write). */
function nextRow(
  before: PresenceRow | undefined,
  update: PresenceUpdate,
  now: number,
): { state: PresenceState; status_msg: string | null; lastActive: number | bigint; onlineUntil: number | bigint } | undefined {
  const lastActive = before === undefined ? now : BigInt(before.last_active_ts)
  const onlineUntil = before === undefined ? 0n : BigInt(before.online_until_ts)
  const connected = (until: number) => (BigInt(until) > onlineUntil ? BigInt(until) : onlineUntil)
  const statusMsg = before?.status_msg ?? null
  switch (update.kind) {
    case 'set':
      return {
        state: update.state,
        status_msg: update.statusMsg ?? null,
        lastActive: update.state === 'online' ? now : lastActive,
        onlineUntil: update.state === 'offline' ? 0 : connected(now + connectedTimeoutMs),
      }
    case 'sync': {
      const state = update.state === 'online' && before?.state === 'unavailable' ? 'unavailable' : update.state
      // Coming online is activity; staying online by syncing is not.
      const comesOnline = state === 'online' && before?.state !== 'online'
      return { state, status_msg: statusMsg, lastActive: comesOnline ? now : lastActive, onlineUntil: connected(update.connectedUntil + connectedTimeoutMs) }
    }
    case 'active':
      // No row: never connected, nothing to show. Otherwise only `unavailable` reaches here.
      if (before === undefined) return undefined
      return { state: 'online', status_msg: statusMsg, lastActive: now, onlineUntil: connected(now + connectedTimeoutMs) }
  }
}

/**
 * Sets every user whose connection ran out by `now` offline, each with a new stream ID, so
 * waiting syncs learn of it. Cheap when nobody's did (one index probe, no lock).
 *
 * @returns how many users went offline.
 * @example
 * await expirePresence(db, Date.now()) // 3
 */
export async function expirePresence(db: Kysely<Database>, now: number): Promise<number> {
  return setStateWhere(db, 'offline', sql<SqlBool>`state <> 'offline' AND online_until_ts < ${now}::int8`)
}

/**
 * Sets every online user without activity for `idleAfterMs` (as of `now`) unavailable, each with
 * a new stream ID. Cheap when nobody is idle (one index probe, no lock).
 *
 * @returns how many users went idle.
 * @example
 * await idlePresence(db, Date.now()) // 1
 */
export async function idlePresence(db: Kysely<Database>, now: number): Promise<number> {
  return setStateWhere(db, 'unavailable', sql<SqlBool>`state = 'online' AND last_active_ts < ${now - idleAfterMs}::int8`)
}

/**
 * Sets the users matching `where` (an indexed condition on `presence`) to `state`, each with a
 * new stream ID, under the stream lock; a probe without a lock first, so a sweep that finds
 * nobody costs one index lookup.
 */
async function setStateWhere(db: Kysely<Database>, state: PresenceState, where: RawBuilder<SqlBool>): Promise<number> {
  const { rows } = await sql<{ due: boolean }>`SELECT EXISTS (SELECT 1 FROM presence WHERE ${where}) AS due`.execute(db)
  if (!rows[0]?.due) return 0
  return db.transaction().execute(async (trx) => {
    await lockOrderedStream(trx, 'presence')
    const result = await sql`UPDATE presence SET state = ${state}, stream_id = nextval('presence_stream_seq') WHERE ${where}`.execute(trx)
    return Number(result.numAffectedRows ?? 0)
  })
}

/**
 * `userId`'s presence as `observer` may see it: their own always, another user's when the two
 * share a joined room (as Synapse decides); undefined when `observer` may not see it.
 *
 * @example
 * await presenceOf(db, '@bob:hs', '@alice:hs', Date.now()) // { presence: 'online', last_active_ago: 1200, currently_active: true }
 */
export async function presenceOf(db: Kysely<Database>, userId: string, observer: string, now: number): Promise<PresenceStatus | undefined> {
  const { rows } = await sql<(PresenceRow | { [K in keyof PresenceRow]: null }) & { visible: boolean }>`
    SELECT p.state, p.status_msg, p.last_active_ts, p.online_until_ts,
           (${userId} = ${observer} OR ${sharesRoomSql(sql`${userId}::text`, observer)}) AS visible
    FROM (SELECT 1) one LEFT JOIN presence p ON p.user_id = ${userId}`.execute(db)
  const row = rows[0]
  if (!row?.visible) return undefined
  return row.state === null ? { presence: 'offline' } : statusOf(row, now)
}

/** An `m.presence` event of a sync. */
export interface PresenceEvent {
  readonly type: 'm.presence'
  readonly sender: string
  readonly content: PresenceStatus
}

/**
 * The presence events `userId`'s sync shows: theirs and those of users sharing a joined room
 * with them. Initial sync (`after` undefined): everyone not offline; incremental: whoever
 * changed in `(after, upTo]`, offline ones included.
 *
 * @example
 * await presenceForSync(db, '@a:hs', { after: 4n, upTo: 9n, now: Date.now() })
 * // [{ type: 'm.presence', sender: '@b:hs', content: { presence: 'offline', last_active_ago: 61000 } }]
 */
export async function presenceForSync(db: Kysely<Database>, userId: string, range: { after: bigint | undefined; upTo: bigint; now: number }): Promise<PresenceEvent[]> {
  if (range.after !== undefined && range.after >= range.upTo) return []
  const changed = range.after === undefined ? sql`p.state <> 'offline'` : sql`p.stream_id > ${range.after}::int8`
  const { rows } = await sql<PresenceRow & { user_id: string }>`
    SELECT p.user_id, p.state, p.status_msg, p.last_active_ts, p.online_until_ts FROM presence p
    WHERE ${changed} AND p.stream_id <= ${range.upTo}::int8
      AND (p.user_id = ${userId} OR ${sharesRoomSql(sql`p.user_id`, userId)})
    ORDER BY p.user_id`.execute(db)
  return rows.map((row) => ({ type: 'm.presence', sender: row.user_id, content: statusOf(row, range.now) }))
}

function statusOf(row: PresenceRow, now: number): PresenceStatus {
  const lastActiveAgo = Math.max(0, now - Number(row.last_active_ts))
  return {
    presence: row.state,
    ...(row.status_msg !== null && { status_msg: row.status_msg }),
    last_active_ago: lastActiveAgo,
    currently_active: row.state === 'online' && lastActiveAgo <= currentlyActiveMs,
  }
}
