import type { Transaction } from 'kysely'
import { claimRoomHead } from '../storage/events/append-events.js'
import { getCurrentState, getForwardExtremities, lockRoomHeads } from '../storage/events/event-store.js'
import type { Extremity, RoomHead } from '../storage/events/event-store.js'
import type { Logger } from '../storage/logger.js'
import type { Database } from '../storage/schema.js'
import { stateEventOf, stateKey } from './auth-rules.js'
import type { RoomStateEvent } from './auth-rules.js'

/** A current state entry as the persister keeps it: what `authorizeEvent` reads, plus the event ID. */
export interface SnapshotStateEvent extends RoomStateEvent {
  readonly event_id: string
}

/**
 * What a persister needs to append to a room: current state, forward extremities and depth, as
 * of head row (`epoch`, `lastStreamOrdering`). A snapshot cached between batches is valid only
 * while the locked head row still shows this writer as owner at the same epoch and stream
 * ordering; any other writer's batch changes one of them (a claim bumps the epoch, a live write
 * advances `last_stream_ordering`). Imports change neither state nor forward extremities, so
 * they leave a snapshot valid.
 *
 * A snapshot is never mutated: a batch works on copies and the cache takes the new snapshot only
 * after commit.
 */
export interface RoomSnapshot {
  readonly epoch: bigint
  readonly lastStreamOrdering: bigint | null
  /** Keyed by `stateKey(type, state_key)`. */
  readonly state: ReadonlyMap<string, SnapshotStateEvent>
  /** Deepest first. */
  readonly extremities: readonly Extremity[]
  readonly maxDepth: bigint
}

/** The locked head row, after any ownership claim, and the snapshot to build on. */
export interface AcquiredRoom {
  /** `undefined` when the room does not exist yet (no head row to lock). */
  readonly head: RoomHead | undefined
  readonly snapshot: RoomSnapshot
}

/**
 * Locks the room's head row and makes this writer its owner (fencing, ARCHITECTURE §6): when
 * the row names another owner (or none), `writer` claims it by bumping the epoch, which
 * invalidates every other writer's cached snapshot. The caller MUST have checked that the shard
 * map assigns the room to `writer`. Returns `cached` when still valid, else a snapshot read in
 * this transaction.
 *
 * Two writers whose shard maps both claim a room take turns, batch by batch; the row lock
 * orders their transactions and each reads the extremities the previous one left, so the room
 * DAG stays a single chain.
 *
 * @example
 * const { head, snapshot } = await acquireRoom(trx, roomId, 'persister1', cache.get(roomId), log)
 */
export async function acquireRoom(
  trx: Transaction<Database>,
  roomId: string,
  writer: string,
  cached: RoomSnapshot | undefined,
  log: Logger,
): Promise<AcquiredRoom> {
  const [acquired] = await acquireRooms(trx, [{ roomId, cached }], writer, log)
  return acquired as AcquiredRoom
}

/**
 * `acquireRoom` for several rooms: their head rows are locked in one statement (in room ID
 * order); claims and snapshot loads, rare once rooms are cached, go room by room.
 *
 * @returns one entry per room, in the order given.
 */
export async function acquireRooms(
  trx: Transaction<Database>,
  rooms: readonly { readonly roomId: string; readonly cached: RoomSnapshot | undefined }[],
  writer: string,
  log: Logger,
): Promise<AcquiredRoom[]> {
  const heads = await lockRoomHeads(trx, rooms.map((r) => r.roomId))
  const acquired: AcquiredRoom[] = []
  for (const { roomId, cached } of rooms) {
    let head = heads.get(roomId)
    if (head === undefined) {
      acquired.push({ head, snapshot: { epoch: 1n, lastStreamOrdering: null, state: new Map(), extremities: [], maxDepth: 0n } })
      continue
    }
    if (head.owner !== writer) {
      const epoch = await claimRoomHead(trx, roomId, writer)
      log.info({ roomId, previousOwner: head.owner, epoch: String(epoch) }, 'room ownership claimed')
      head = { ...head, owner: writer, epoch }
    } else if (cached !== undefined && cached.epoch === head.epoch && cached.lastStreamOrdering === head.lastStreamOrdering) {
      acquired.push({ head, snapshot: cached })
      continue
    }
    acquired.push({ head, snapshot: await loadSnapshot(trx, head) })
  }
  return acquired
}

async function loadSnapshot(trx: Transaction<Database>, head: RoomHead): Promise<RoomSnapshot> {
  const [entries, extremities] = await Promise.all([getCurrentState(trx, head.roomId), getForwardExtremities(trx, head.roomId)])
  const state = new Map<string, SnapshotStateEvent>()
  for (const entry of entries) state.set(stateKey(entry.type, entry.stateKey), { ...stateEventOf(entry), event_id: entry.eventId })
  return { epoch: head.epoch, lastStreamOrdering: head.lastStreamOrdering, state, extremities, maxDepth: head.maxDepth }
}
