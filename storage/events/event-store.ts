import { sql } from 'kysely'
import type { Kysely, Transaction } from 'kysely'
import type { Database } from '../schema.js'
import type { JsonObject } from './redaction.js'

/**
 * Reads of stored events and room heads, shared by the persister (inside its transactions) and
 * the API (outside them). Every function takes a `Kysely` or a `Transaction`; none writes.
 *
 * Stored form: `event_json.json` is the signed PDU as canonical JSON WITHOUT `event_id` (room
 * versions 4+ derive the ID from the reference hash, as Synapse stores it); `StoredEvent.pdu`
 * adds `event_id` back.
 */

/** The head row of a room (`rooms`): ownership for fencing and the persisted high-water marks. */
export interface RoomHead {
  readonly roomId: string
  readonly roomVersion: string
  readonly creator: string
  /** The writer that owns the room; `null` for a room no writer has claimed yet. */
  readonly owner: string | null
  /** Bumped by every ownership change; a persister's cached room state is valid only at the epoch it was read at. */
  readonly epoch: bigint
  /** Highest depth of a live (non-imported) event; 0 before the first one. */
  readonly maxDepth: bigint
  /** Highest positive stream ordering of the room; `null` before the first event. */
  readonly lastStreamOrdering: bigint | null
}

/** One stored event with its stream position. */
export interface StoredEvent {
  readonly eventId: string
  readonly roomId: string
  /** > 0: live (events stream); < 0: imported history (backfill stream). */
  readonly streamOrdering: bigint
  /** The writer that allocated `streamOrdering`. */
  readonly writer: string
  readonly depth: bigint
  readonly outlier: boolean
  /** The signed PDU with `event_id`. */
  readonly pdu: JsonObject
}

/** One entry of a room's current state, with the event's sender and content. */
export interface CurrentStateEntry {
  readonly type: string
  readonly stateKey: string
  readonly eventId: string
  readonly sender: string
  readonly content: JsonObject
  /** `content.membership` of m.room.member events, else `null`. */
  readonly membership: string | null
  readonly streamOrdering: bigint
}

/** A forward extremity and its depth. */
export interface Extremity {
  readonly eventId: string
  readonly depth: bigint
}

type Db = Kysely<Database> | Transaction<Database>

/**
 * The room's head row, or `undefined` when the room does not exist.
 *
 * @example
 * const head = await getRoomHead(db, '!r:example.org')
 * head?.owner // 'persister1'
 */
export async function getRoomHead(db: Db, roomId: string): Promise<RoomHead | undefined> {
  const row = await headQuery(db, roomId).executeTakeFirst()
  return row === undefined ? undefined : toHead(row)
}

/**
 * Like `getRoomHead` for several rooms, but locks their rows (`SELECT … FOR UPDATE`) until the
 * transaction ends: the persister's per-room mutual exclusion across processes. Locks in room
 * ID order (so two transactions locking overlapping sets cannot deadlock). Rooms that do not
 * exist are absent. MUST run inside a transaction.
 *
 * @example
 * await db.transaction().execute(async (trx) => {
 *   const heads = await lockRoomHeads(trx, ['!a:hs', '!b:hs']) // other writers of these rooms wait here
 *   heads.get('!a:hs')?.epoch // 3n
 * })
 */
export async function lockRoomHeads(trx: Transaction<Database>, roomIds: readonly string[]): Promise<Map<string, RoomHead>> {
  // `= ANY(array)`: one statement text whatever the number of rooms (prepared once).
  const rows = await headSelect(trx)
    .where(sql<boolean>`room_id = ANY(${[...roomIds]}::text[])`)
    .orderBy('room_id')
    .forUpdate()
    .execute()
  return new Map(rows.map((row) => [row.room_id, toHead(row)]))
}

/**
 * One event by ID, or `undefined`.
 *
 * @example
 * const event = await getEvent(db, '$abc')
 * event?.pdu['content'] // { body: 'hi', msgtype: 'm.text' }
 */
export async function getEvent(db: Db, eventId: string): Promise<StoredEvent | undefined> {
  return (await getEvents(db, [eventId])).get(eventId)
}

/**
 * Several events by ID; IDs not stored are absent from the map.
 *
 * @example
 * const events = await getEvents(db, ['$a', '$b'])
 * events.get('$a')?.streamOrdering // 42n
 */
export async function getEvents(db: Db, eventIds: readonly string[]): Promise<Map<string, StoredEvent>> {
  const found = new Map<string, StoredEvent>()
  if (eventIds.length === 0) return found
  const rows = await db
    .selectFrom('events as e')
    .innerJoin('event_json as j', 'j.event_id', 'e.event_id')
    .select(['e.event_id', 'e.room_id', 'e.stream_ordering', 'e.instance_name', 'e.depth', 'e.outlier', 'j.json'])
    .where('e.event_id', 'in', [...new Set(eventIds)])
    .execute()
  for (const row of rows) {
    found.set(row.event_id, {
      eventId: row.event_id,
      roomId: row.room_id,
      streamOrdering: row.stream_ordering,
      writer: row.instance_name,
      depth: row.depth,
      outlier: row.outlier,
      pdu: { ...(JSON.parse(row.json) as JsonObject), event_id: row.event_id },
    })
  }
  return found
}

/**
 * The room's current state (empty for an unknown room), in no particular order.
 *
 * @example
 * const state = await getCurrentState(db, roomId)
 * state.find((s) => s.type === 'm.room.name')?.content['name'] // 'Lobby'
 */
export async function getCurrentState(db: Db, roomId: string): Promise<CurrentStateEntry[]> {
  const rows = await db
    .selectFrom('current_state_events as c')
    .innerJoin('event_json as j', 'j.event_id', 'c.event_id')
    .select(['c.type', 'c.state_key', 'c.event_id', 'c.membership', 'c.stream_ordering', 'j.json'])
    .where('c.room_id', '=', roomId)
    .execute()
  return rows.map(currentStateEntry)
}

/** A `current_state_events` row joined with its event's JSON, as a `CurrentStateEntry`. */
export function currentStateEntry(row: {
  readonly type: string
  readonly state_key: string
  readonly event_id: string
  readonly membership: string | null
  readonly stream_ordering: bigint
  readonly json: string
}): CurrentStateEntry {
  const pdu = JSON.parse(row.json) as JsonObject
  const content = pdu['content']
  return {
    type: row.type,
    stateKey: row.state_key,
    eventId: row.event_id,
    sender: String(pdu['sender']),
    content: typeof content === 'object' && content !== null && !Array.isArray(content) ? (content as JsonObject) : {},
    membership: row.membership,
    streamOrdering: row.stream_ordering,
  }
}

/**
 * The room's forward extremities (events nothing references yet), deepest first, ties by event ID.
 *
 * @example
 * const [latest] = await getForwardExtremities(db, roomId)
 * latest?.depth // 17n
 */
export async function getForwardExtremities(db: Db, roomId: string): Promise<Extremity[]> {
  const rows = await db
    .selectFrom('event_forward_extremities as f')
    .innerJoin('events as e', 'e.event_id', 'f.event_id')
    .select(['f.event_id', 'e.depth'])
    .where('f.room_id', '=', roomId)
    .orderBy('e.depth', 'desc')
    .orderBy('f.event_id')
    .execute()
  return rows.map((row) => ({ eventId: row.event_id, depth: row.depth }))
}

/**
 * The room's backward extremities: prev_events referenced by stored events but not stored
 * themselves (where more history could be imported from), sorted by event ID.
 *
 * @example
 * await getBackwardExtremities(db, roomId) // ['$missing']
 */
export async function getBackwardExtremities(db: Db, roomId: string): Promise<string[]> {
  const rows = await db
    .selectFrom('event_backward_extremities')
    .select('event_id')
    .where('room_id', '=', roomId)
    .orderBy('event_id')
    .execute()
  return rows.map((row) => row.event_id)
}

function headQuery(db: Db, roomId: string) {
  return headSelect(db).where('room_id', '=', roomId)
}

function headSelect(db: Db) {
  return db.selectFrom('rooms').select(['room_id', 'room_version', 'creator', 'owner', 'epoch', 'max_depth', 'last_stream_ordering'])
}

function toHead(row: {
  room_id: string
  room_version: string
  creator: string
  owner: string | null
  epoch: bigint
  max_depth: bigint
  last_stream_ordering: bigint | null
}): RoomHead {
  return {
    roomId: row.room_id,
    roomVersion: row.room_version,
    creator: row.creator,
    owner: row.owner,
    epoch: row.epoch,
    maxDepth: row.max_depth,
    lastStreamOrdering: row.last_stream_ordering,
  }
}
