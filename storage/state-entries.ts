import { sql, type Kysely } from 'kysely'
import { currentStateEntry, type CurrentStateEntry } from './events/event-store.js'
import type { Database } from './schema.js'

/**
 * Targeted reads of current state: only the (type, state_key) entries asked for, so the cost
 * does not grow with the room's membership (unlike `getCurrentState`, which reads it all).
 */

/** A state entry to look up. */
export interface StateEntryKey {
  readonly type: string
  readonly stateKey: string
}

/** One current state entry of one room. */
export interface RoomStateEntry extends CurrentStateEntry {
  readonly roomId: string
}

/**
 * The current state entries `keys` of `roomIds` (entries absent from a room's state are absent
 * from the answer), in no particular order.
 *
 * @example
 * const [power] = await getStateEntries(db, [roomId], [{ type: 'm.room.power_levels', stateKey: '' }])
 * power?.content['ban'] // 50
 */
export async function getStateEntries(db: Kysely<Database>, roomIds: readonly string[], keys: readonly StateEntryKey[]): Promise<RoomStateEntry[]> {
  if (roomIds.length === 0 || keys.length === 0) return []
  const rows = await db
    .selectFrom('current_state_events as c')
    .innerJoin('event_json as j', 'j.event_id', 'c.event_id')
    .select(['c.room_id', 'c.type', 'c.state_key', 'c.event_id', 'c.membership', 'c.stream_ordering', 'j.json'])
    .where('c.room_id', 'in', [...new Set(roomIds)])
    .where(sql<boolean>`(c.type, c.state_key) in (${sql.join(keys.map((k) => sql`(${k.type}, ${k.stateKey})`))})`)
    .execute()
  return rows.map((row) => ({ roomId: row.room_id, ...currentStateEntry(row) }))
}

/**
 * The current membership of `userId` in `roomId` (`join`, `invite`, `leave`, `ban`, `knock`),
 * or `undefined` when the user has no member event there.
 *
 * @example
 * await currentMembership(db, '!abc:example.org', '@alice:example.org') // 'join'
 */
export async function currentMembership(db: Kysely<Database>, roomId: string, userId: string): Promise<string | undefined> {
  const row = await db
    .selectFrom('current_state_events')
    .select('membership')
    .where('room_id', '=', roomId)
    .where('type', '=', 'm.room.member')
    .where('state_key', '=', userId)
    .executeTakeFirst()
  return row?.membership ?? undefined
}
