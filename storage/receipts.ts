import { sql, type Kysely } from 'kysely'
import { setAccountData } from './account-data.js'
import { lockOrderedStream } from './ordered-streams.js'
import type { Database } from './schema.js'

/**
 * Read receipts (client-server API "Receipts"): the latest receipt per (room, type, user,
 * thread), each row carrying the stream ID of its last change in the rooms' ephemeral stream
 * (storage/ordered-streams.ts, which orders them for /sync).
 *
 * A receipt never moves back: one for an event older (in stream order) than the user's current
 * receipt of that type and thread is accepted and changes nothing, as in Synapse.
 */

/** Receipt types stored here (`m.fully_read` is room account data, set by /read_markers). */
export const receiptTypes = ['m.read', 'm.read.private'] as const
export type ReceiptType = (typeof receiptTypes)[number]

/** One receipt to store. */
export interface NewReceipt {
  readonly roomId: string
  readonly userId: string
  readonly type: ReceiptType
  readonly eventId: string
  /** A thread's root event ID, or `main`; absent: unthreaded. */
  readonly threadId?: string
  /** When it was received (ms since the epoch). */
  readonly ts: number
}

/** What became of a receipt: stored (with its stream ID), kept (an older event), or no such event in the room. */
export type ReceiptOutcome = { readonly kind: 'stored'; readonly streamId: bigint } | { readonly kind: 'kept' } | { readonly kind: 'event-not-found' }

/**
 * Stores a receipt, replacing the user's previous one of the same type and thread unless that
 * one is for a later event. The event must be in the room (committed; the caller's own reader
 * need not have caught up with it).
 *
 * @example
 * await putReceipt(db, { roomId, userId: '@a:hs', type: 'm.read', eventId: '$e', ts: Date.now() }) // { kind: 'stored', streamId: 7n }
 */
export async function putReceipt(db: Kysely<Database>, receipt: NewReceipt): Promise<ReceiptOutcome> {
  const data = JSON.stringify({ ts: receipt.ts, ...(receipt.threadId !== undefined && { thread_id: receipt.threadId }) })
  return db.transaction().execute(async (trx) => {
    await lockOrderedStream(trx, 'ephemeral')
    const { rows } = await sql<{ found: boolean; stream_id: string | null }>`
      WITH target AS (
        SELECT stream_ordering FROM events WHERE event_id = ${receipt.eventId} AND room_id = ${receipt.roomId}
      ), upserted AS (
        INSERT INTO receipts AS r (room_id, receipt_type, user_id, thread_id, event_id, data, stream_id)
        SELECT ${receipt.roomId}, ${receipt.type}, ${receipt.userId}, ${receipt.threadId ?? ''}, ${receipt.eventId}, ${data}::jsonb,
               nextval('receipts_stream_seq')
        FROM target
        ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE
          SET event_id = excluded.event_id, data = excluded.data, stream_id = excluded.stream_id
          WHERE coalesce((SELECT e.stream_ordering FROM events e WHERE e.event_id = r.event_id), -9223372036854775808)
                < (SELECT stream_ordering FROM target)
        RETURNING r.stream_id
      )
      SELECT EXISTS (SELECT 1 FROM target) AS found, (SELECT stream_id FROM upserted) AS stream_id`.execute(trx)
    const row = rows[0]
    if (!row?.found) return { kind: 'event-not-found' }
    return row.stream_id === null ? { kind: 'kept' } : { kind: 'stored', streamId: BigInt(row.stream_id) }
  })
}

/**
 * Moves the user's fully read marker in a room (the room account data `m.fully_read`, which
 * sync shows in the room's `account_data`) to `eventId`, unless it is already at a later event.
 *
 * @example
 * await putFullyRead(db, { roomId, userId: '@a:hs', eventId: '$e' }) // { kind: 'stored', streamId: 12n }
 */
export async function putFullyRead(db: Kysely<Database>, marker: { roomId: string; userId: string; eventId: string }): Promise<ReceiptOutcome> {
  const { rows } = await sql<{ target: string | null; current: string | null }>`
    SELECT (SELECT stream_ordering FROM events WHERE event_id = ${marker.eventId} AND room_id = ${marker.roomId}) AS target,
           (SELECT e.stream_ordering FROM account_data a JOIN events e ON e.event_id = a.content->>'event_id'
            WHERE a.user_id = ${marker.userId} AND a.room_id = ${marker.roomId} AND a.type = 'm.fully_read') AS current`.execute(db)
  const row = rows[0]
  if (row?.target === null || row?.target === undefined) return { kind: 'event-not-found' }
  if (row.current !== null && BigInt(row.current) >= BigInt(row.target)) return { kind: 'kept' }
  const streamId = await setAccountData(db, { userId: marker.userId, roomId: marker.roomId, type: 'm.fully_read', content: { event_id: marker.eventId } })
  return { kind: 'stored', streamId }
}

/**
 * Which of `eventIds` are not events of `roomId`.
 *
 * @example
 * await eventsNotInRoom(db, '!r:hs', ['$a', '$elsewhere']) // ['$elsewhere']
 */
export async function eventsNotInRoom(db: Kysely<Database>, roomId: string, eventIds: readonly string[]): Promise<string[]> {
  const { rows } = await sql<{ event_id: string }>`
    SELECT event_id FROM events WHERE room_id = ${roomId} AND event_id = ANY(${[...eventIds]}::text[])`.execute(db)
  const found = new Set(rows.map((row) => row.event_id))
  return eventIds.filter((id) => !found.has(id))
}

/** An `m.receipt` event's content: event ID → receipt type → user ID → `{ ts, thread_id? }`. */
export type ReceiptContent = Record<string, Record<string, Record<string, Record<string, unknown>>>>

/**
 * The receipts `viewer` sees in sync, by room, as `m.receipt` contents: every receipt of
 * `everything` (rooms new to this sync) and those changed after `after` in `changedOnly`, all
 * up to `upTo`. Private receipts (`m.read.private`) are shown to their own user only.
 *
 * @example
 * await receiptsForSync(db, '@a:hs', { everything: ['!new:hs'], changedOnly: ['!old:hs'], after: 5n, upTo: 9n })
 * // Map { '!new:hs' => { '$e': { 'm.read': { '@b:hs': { ts: 1700000000000 } } } } }
 */
export async function receiptsForSync(
  db: Kysely<Database>,
  viewer: string,
  rooms: { everything: readonly string[]; changedOnly: readonly string[]; after: bigint | undefined; upTo: bigint },
): Promise<Map<string, ReceiptContent>> {
  const changedOnly = rooms.after === undefined || rooms.after < rooms.upTo ? rooms.changedOnly : []
  const result = new Map<string, ReceiptContent>()
  if (rooms.everything.length === 0 && changedOnly.length === 0) return result
  const { rows } = await sql<{ room_id: string; receipt_type: string; user_id: string; event_id: string; data: Record<string, unknown> }>`
    SELECT room_id, receipt_type, user_id, event_id, data FROM receipts
    WHERE stream_id <= ${rooms.upTo}
      AND (receipt_type <> 'm.read.private' OR user_id = ${viewer})
      AND (room_id = ANY(${[...rooms.everything]}::text[])
           OR (room_id = ANY(${[...changedOnly]}::text[]) AND stream_id > ${rooms.after ?? 0n}))
    ORDER BY stream_id`.execute(db)
  for (const row of rows) {
    const content = result.get(row.room_id) ?? {}
    result.set(row.room_id, content)
    const byType = (content[row.event_id] ??= {})
    const byUser = (byType[row.receipt_type] ??= {})
    byUser[row.user_id] = row.data
  }
  return result
}
