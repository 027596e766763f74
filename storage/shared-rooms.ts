import { sql, type Kysely, type RawBuilder } from 'kysely'
import type { Database } from './schema.js'

/**
 * Who shares a joined room with whom (presence and device lists are shown to them), from the
 * current memberships (`current_state_members` index).
 */

/**
 * SQL: true when the user `user` (an SQL expression) shares a joined room with `observer`.
 *
 * @example
 * sql`SELECT p.user_id FROM presence p WHERE ${sharesRoomSql(sql`p.user_id`, '@a:hs')}`
 */
export function sharesRoomSql(user: RawBuilder<unknown>, observer: string): RawBuilder<boolean> {
  return sql<boolean>`EXISTS (
    SELECT 1 FROM current_state_events mine
    JOIN current_state_events theirs ON theirs.room_id = mine.room_id AND theirs.type = 'm.room.member' AND theirs.membership = 'join'
    WHERE mine.type = 'm.room.member' AND mine.state_key = ${observer} AND mine.membership = 'join' AND theirs.state_key = ${user})`
}

/**
 * For a stream keyed by user (presence, device lists): the keys whose syncs a change in
 * `(after, upTo]` concerns, each with the newest stream ID of its changes: the changed users
 * themselves, and the rooms they are joined to (whose members see them).
 *
 * @example
 * await userChangesWithRooms(db, 'presence', 4n, 9n) // Map { '@b:hs' => 7n, '!r:hs' => 7n }
 */
export async function userChangesWithRooms(db: Kysely<Database>, table: 'presence' | 'device_lists_changes', after: bigint, upTo: bigint): Promise<Map<string, bigint>> {
  const { rows } = await sql<{ key: string; newest: string | bigint }>`
    WITH changed AS (SELECT user_id, stream_id FROM ${sql.table(table)} WHERE stream_id > ${after}::int8 AND stream_id <= ${upTo}::int8)
    SELECT key, max(stream_id) AS newest FROM (
      SELECT user_id AS key, stream_id FROM changed
      UNION ALL
      SELECT m.room_id, c.stream_id FROM changed c
      JOIN current_state_events m ON m.type = 'm.room.member' AND m.state_key = c.user_id AND m.membership = 'join'
    ) keys GROUP BY key`.execute(db)
  return new Map(rows.map((row) => [row.key, BigInt(row.newest)]))
}
