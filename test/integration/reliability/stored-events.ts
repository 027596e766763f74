import { expect } from 'chai'
import type { Kysely } from 'kysely'
import type { Database } from '../../../storage/schema.js'
import { loadSend } from './load.js'
import type { SyncLoop } from './sync-loop.js'

/** What the crash tests check in the database: each event once, each txn once, linear rooms. */

/** Occurrences of each value. */
export function countBy(values: readonly string[]): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const value of values) counts[value] = (counts[value] ?? 0) + 1
  return counts
}

/**
 * Asserts each event ID is stored exactly once, in `events` and in `event_json`.
 *
 * @example
 * await expectStoredOnce(db, ['$a', '$b'])
 */
export async function expectStoredOnce(db: Kysely<Database>, eventIds: readonly string[]): Promise<void> {
  if (eventIds.length === 0) return
  const rows = await db.selectFrom('events').select('event_id').where('event_id', 'in', [...eventIds]).execute()
  const jsonRows = await db.selectFrom('event_json').select('event_id').where('event_id', 'in', [...eventIds]).execute()
  expect(countBy(rows.map((r) => r.event_id)), 'events rows per event ID').to.deep.equal(Object.fromEntries(eventIds.map((id) => [id, 1])))
  expect(countBy(jsonRows.map((r) => r.event_id)), 'event_json rows per event ID').to.deep.equal(Object.fromEntries(eventIds.map((id) => [id, 1])))
}

/**
 * The stored message events of `rooms`: per transaction ID, how many `event_txn_ids` rows name
 * it, and per body, how many events carry it. Both must be all ones when nothing duplicated.
 */
export async function messageCounts(db: Kysely<Database>, rooms: readonly string[]): Promise<{ perTxn: Record<string, number>; perBody: Record<string, number>; eventOfTxn: Map<string, string> }> {
  const txns = await db.selectFrom('event_txn_ids').select(['txn_id', 'event_id']).where('room_id', 'in', [...rooms]).execute()
  const messages = await db
    .selectFrom('events')
    .innerJoin('event_json', 'event_json.event_id', 'events.event_id')
    .select('event_json.json')
    .where('events.room_id', 'in', [...rooms])
    .where('events.type', '=', 'm.room.message')
    .execute()
  const bodies = messages.map((row) => String((JSON.parse(row.json) as { content: { body: unknown } }).content.body))
  return { perTxn: countBy(txns.map((t) => t.txn_id)), perBody: countBy(bodies), eventOfTxn: new Map(txns.map((t) => [t.txn_id, t.event_id])) }
}

/**
 * Asserts a room's DAG is one chain: the create event has no prev, every other event exactly
 * one, no event is the prev of two events (no fork), and exactly one forward extremity: the last event.
 *
 * @example
 * await expectLinearRoom(db, roomId)
 */
export async function expectLinearRoom(db: Kysely<Database>, roomId: string): Promise<void> {
  const events = await db.selectFrom('events').select(['event_id', 'type', 'depth']).where('room_id', '=', roomId).orderBy('stream_ordering').execute()
  const edges = await db.selectFrom('event_edges').select(['event_id', 'prev_event_id']).where('room_id', '=', roomId).execute()
  const forward = await db.selectFrom('event_forward_extremities').select('event_id').where('room_id', '=', roomId).execute()
  const prevCount = countBy(edges.map((e) => e.event_id))
  const childCount = countBy(edges.map((e) => e.prev_event_id))
  for (const event of events) {
    expect(prevCount[event.event_id] ?? 0, `prev_events of ${event.type} ${event.event_id}`).to.equal(event.type === 'm.room.create' ? 0 : 1)
    expect(childCount[event.event_id] ?? 0, `events pointing at ${event.event_id}`).to.be.at.most(1)
  }
  const depths = events.map((e) => Number(e.depth))
  expect(new Set(depths).size, 'one event per depth').to.equal(events.length)
  expect(forward.map((f) => f.event_id), 'forward extremities').to.deep.equal([events.at(-1)?.event_id])
}

/**
 * Asserts every acknowledged send of a load (`acked`: send index → event ID, all made with
 * `loadSend(label, i)`) is stored exactly once — one `event_txn_ids` row per txn, one event per
 * body, the acknowledged event is the txn's event, nothing else of the load stored — that the
 * rooms are still linear, and that `sync` (stopped) delivered each message at most once with
 * tokens that never went backwards.
 *
 * @example
 * await expectSendsExactlyOnce(t.db, rooms, label, acked, sync)
 */
export async function expectSendsExactlyOnce(db: Kysely<Database>, rooms: readonly string[], label: string, acked: ReadonlyMap<number, string>, sync: SyncLoop): Promise<void> {
  const { perTxn, perBody, eventOfTxn } = await messageCounts(db, rooms)
  const ofLoad = (counts: Record<string, number>, prefix: string) => Object.fromEntries(Object.entries(counts).filter(([key]) => key.startsWith(prefix)))
  const sends = [...acked.keys()].map((i) => loadSend(label, i))
  expect(ofLoad(perTxn, `${label}-`), 'event_txn_ids rows per txn').to.deep.equal(Object.fromEntries(sends.map((s) => [s.txnId, 1])))
  expect(ofLoad(perBody, `${label} `), 'stored messages per body').to.deep.equal(Object.fromEntries(sends.map((s) => [s.body, 1])))
  for (const [i, eventId] of acked) expect(eventId, `acknowledged event of ${loadSend(label, i).txnId}`).to.equal(eventOfTxn.get(loadSend(label, i).txnId))
  await expectStoredOnce(db, [...acked.values()])
  for (const roomId of rooms) await expectLinearRoom(db, roomId)
  expect(sync.problems, 'sync problems').to.deep.equal([])
  expect([...sync.seen].filter(([, n]) => n !== 1), 'events delivered more than once by /sync').to.deep.equal([])
}
