import { sql, type Kysely } from 'kysely'
import { lockOrderedStream } from './ordered-streams.js'
import type { Database } from './schema.js'

/**
 * Typing notifications (client-server API "Typing Notifications"): who types in which room, until
 * when. A row's stream ID (the rooms' ephemeral stream, storage/ordered-streams.ts) moves only
 * when the room's list of typing users changes: a user starts, stops, or times out. Renewing a
 * typing user's timeout (clients do every few seconds) moves nothing, so it wakes no sync.
 *
 * Timeouts: a user whose timeout ran out is left out of every list at once; the background
 * process's sweep (`expireTyping`, every second) records the change, which wakes the syncs.
 */

/** Timeout when the client gives none, and the longest one honoured (ms). */
export const defaultTypingTimeoutMs = 30_000
export const maxTypingTimeoutMs = 120_000

/**
 * Records that `userId` started (`timeoutMs`: for how long) or stopped typing in `roomId`.
 *
 * @example
 * await setTyping(db, { roomId, userId: '@a:hs', typing: true, timeoutMs: 30_000, now: Date.now() })
 */
export async function setTyping(
  db: Kysely<Database>,
  change: { roomId: string; userId: string; typing: boolean; timeoutMs?: number; now: number },
): Promise<void> {
  const { roomId, userId, now } = change
  await db.transaction().execute(async (trx) => {
    await lockOrderedStream(trx, 'ephemeral')
    if (!change.typing) {
      await sql`UPDATE typing SET expires_ts = 0, stream_id = nextval('receipts_stream_seq')
                WHERE room_id = ${roomId} AND user_id = ${userId} AND expires_ts > 0`.execute(trx)
      return
    }
    const expires = now + Math.min(change.timeoutMs ?? defaultTypingTimeoutMs, maxTypingTimeoutMs)
    // The stream ID moves unless the user was typing already (then only the timeout is renewed).
    await sql`
      INSERT INTO typing AS t (room_id, user_id, expires_ts, stream_id)
      VALUES (${roomId}, ${userId}, ${expires}, nextval('receipts_stream_seq'))
      ON CONFLICT (room_id, user_id) DO UPDATE
        SET expires_ts = excluded.expires_ts,
            stream_id = CASE WHEN t.expires_ts > ${now}::int8 THEN t.stream_id ELSE excluded.stream_id END`.execute(trx)
  })
}

/**
 * Stops every typing user whose timeout ran out by `now`, each with a new stream ID, so waiting
 * syncs learn of it. Cheap when nobody's timeout ran out (one index probe, no lock).
 *
 * @returns how many users stopped.
 * @example
 * await expireTyping(db, Date.now()) // 2
 */
export async function expireTyping(db: Kysely<Database>, now: number): Promise<number> {
  const { rows } = await sql<{ due: boolean }>`SELECT EXISTS (SELECT 1 FROM typing WHERE expires_ts > 0 AND expires_ts <= ${now}::int8) AS due`.execute(db)
  if (!rows[0]?.due) return 0
  return db.transaction().execute(async (trx) => {
    await lockOrderedStream(trx, 'ephemeral')
    const result = await sql`UPDATE typing SET expires_ts = 0, stream_id = nextval('receipts_stream_seq')
                             WHERE expires_ts > 0 AND expires_ts <= ${now}::int8`.execute(trx)
    return Number(result.numAffectedRows ?? 0)
  })
}

/**
 * The `m.typing` user lists `viewer`'s sync shows, by room: for rooms new to the sync, who types
 * now (rooms where nobody does are left out); for `changedOnly` rooms, who types now wherever
 * the list changed in `(after, upTo]` (an empty list tells the client that everyone stopped).
 *
 * @example
 * await typingForSync(db, { everything: ['!new:hs'], changedOnly: ['!old:hs'], after: 5n, upTo: 9n, now: Date.now() })
 * // Map { '!new:hs' => ['@b:hs'], '!old:hs' => [] }
 */
export async function typingForSync(
  db: Kysely<Database>,
  rooms: { everything: readonly string[]; changedOnly: readonly string[]; after: bigint | undefined; upTo: bigint; now: number },
): Promise<Map<string, string[]>> {
  const changedOnly = rooms.after === undefined || rooms.after < rooms.upTo ? rooms.changedOnly : []
  const result = new Map<string, string[]>()
  if (rooms.everything.length === 0 && changedOnly.length === 0) return result
  const { rows } = await sql<{ room_id: string; user_id: string; active: boolean; changed: boolean }>`
    SELECT room_id, user_id, expires_ts > ${rooms.now}::int8 AS active,
           bool_or(stream_id > ${rooms.after ?? 0n}::int8 AND stream_id <= ${rooms.upTo}::int8) OVER (PARTITION BY room_id) AS changed
    FROM typing WHERE room_id = ANY(${[...rooms.everything, ...changedOnly]}::text[])
    ORDER BY room_id, user_id`.execute(db)
  const everything = new Set(rooms.everything)
  for (const row of rows) {
    const isNew = everything.has(row.room_id)
    if (isNew ? !row.active : !row.changed) continue
    const list = result.get(row.room_id) ?? []
    result.set(row.room_id, list)
    if (row.active) list.push(row.user_id)
  }
  return result
}

/**
 * Stops the typing, in `roomId`, of the members that `events` make leave or ban: at once, as
 * Synapse's typing handler does, not at their timeout.
 *
 * @example
 * await stopTypingOfDeparted(db, roomId, [{ type: 'm.room.member', state_key: '@b:hs', content: { membership: 'leave' } }], Date.now())
 */
export async function stopTypingOfDeparted(
  db: Kysely<Database>,
  roomId: string,
  events: readonly { readonly type: string; readonly state_key?: string; readonly content: Readonly<Record<string, unknown>> }[],
  now: number,
): Promise<void> {
  for (const event of events) {
    const membership = event.type === 'm.room.member' ? event.content['membership'] : undefined
    if ((membership === 'leave' || membership === 'ban') && event.state_key !== undefined) await setTyping(db, { roomId, userId: event.state_key, typing: false, now })
  }
}
