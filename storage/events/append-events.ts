import type { Insertable, OperationNodeSource, QueryCreator, Transaction } from 'kysely'
import type {
  CurrentStateEventsTable,
  Database,
  EventEdgesTable,
  EventJsonTable,
  EventsTable,
  EventTxnIdsTable,
  RedactionsTable,
  ReplicationRequestsTable,
  RoomMembershipsTable,
  RoomsTable,
  StateEventsTable,
} from '../schema.js'

/**
 * The writes of one persist batch. Each table gets ONE multi-row INSERT per batch (split only
 * when a statement would exceed PostgreSQL's 65,535 bind parameters), so a batch of 100 events
 * costs about a dozen statements, not a dozen per event.
 *
 * Callers MUST hold the room's head row lock (`lockRoomHead`) in the same transaction: these
 * functions check nothing about ordering, ownership or the DAG.
 */

/** Rows of every table a batch of events touches; any array may be empty. */
export interface EventBatchRows {
  readonly events: readonly Insertable<EventsTable>[]
  readonly eventJson: readonly Insertable<EventJsonTable>[]
  readonly edges: readonly Insertable<EventEdgesTable>[]
  readonly stateEvents: readonly Insertable<StateEventsTable>[]
  readonly redactions: readonly Insertable<RedactionsTable>[]
  readonly memberships: readonly Insertable<RoomMembershipsTable>[]
  readonly txnIds: readonly Insertable<EventTxnIdsTable>[]
  readonly replicationRequests: readonly Insertable<ReplicationRequestsTable>[]
}

/** Bind parameters one statement may use (PostgreSQL's limit is 65,535). */
const maxParameters = 60_000

/**
 * Inserts a batch's rows in one statement (each table's insert a data-modifying CTE of it), or,
 * for a batch beyond the protocol's parameter limit, one statement per table and chunk.
 *
 * @example
 * await appendEventRows(trx, { events, eventJson, edges, stateEvents: [], redactions: [],
 *   memberships: [], txnIds: [], replicationRequests: [] })
 */
export async function appendEventRows(trx: Transaction<Database>, rows: EventBatchRows): Promise<void> {
  const tables: { readonly rows: readonly object[]; readonly columns: number; readonly insert: TableInsert }[] = [
    { rows: rows.events, columns: 13, insert: (db, chunk) => db.insertInto('events').values(chunk as Insertable<EventsTable>[]) },
    { rows: rows.eventJson, columns: 3, insert: (db, chunk) => db.insertInto('event_json').values(chunk as Insertable<EventJsonTable>[]) },
    {
      rows: rows.edges,
      columns: 3,
      insert: (db, chunk) =>
        db
          .insertInto('event_edges')
          .values(chunk as Insertable<EventEdgesTable>[])
          .onConflict((oc) => oc.doNothing()),
    },
    { rows: rows.stateEvents, columns: 5, insert: (db, chunk) => db.insertInto('state_events').values(chunk as Insertable<StateEventsTable>[]) },
    { rows: rows.redactions, columns: 2, insert: (db, chunk) => db.insertInto('redactions').values(chunk as Insertable<RedactionsTable>[]) },
    { rows: rows.memberships, columns: 7, insert: (db, chunk) => db.insertInto('room_memberships').values(chunk as Insertable<RoomMembershipsTable>[]) },
    { rows: rows.txnIds, columns: 6, insert: (db, chunk) => db.insertInto('event_txn_ids').values(chunk as Insertable<EventTxnIdsTable>[]) },
    {
      rows: rows.replicationRequests,
      columns: 4,
      insert: (db, chunk) => db.insertInto('replication_requests').values(chunk as Insertable<ReplicationRequestsTable>[]),
    },
  ]
  const inserts = tables.filter((table) => table.rows.length > 0)
  if (inserts.length === 0) return
  const parameters = inserts.reduce((sum, table) => sum + table.rows.length * table.columns, 0)
  if (parameters > maxParameters) {
    for (const table of inserts) for (const chunk of chunks(table.rows, table.columns)) await table.insert(trx, chunk).execute()
    return
  }
  // One round trip instead of one per table (5 to 8): every insert but the last is a CTE, and
  // PostgreSQL runs data-modifying CTEs whether or not the outer statement reads them.
  const last = inserts.pop() as (typeof inserts)[number]
  let creator = trx as unknown as WithChain
  inserts.forEach((table, k) => {
    creator = creator.with(`w${k}`, (db) => table.insert(db, table.rows))
  })
  await last.insert(creator, last.rows).execute()
}

/** An insert of `chunk` into one table of the batch, built on `db` (the transaction or a WITH chain). */
type TableInsert = (db: QueryCreator<Database>, chunk: readonly object[]) => { execute(): Promise<unknown> } & OperationNodeSource

/** `QueryCreator.with` for CTEs that are inserts without RETURNING (kysely types a CTE by its output). */
type WithChain = QueryCreator<Database> & { with(name: string, query: (db: QueryCreator<Database>) => OperationNodeSource): WithChain }

/**
 * Upserts current state entries. At most one row per (room_id, type, state_key) — the caller
 * keeps only the last event per key (PostgreSQL rejects an upsert touching a row twice).
 *
 * @example
 * await upsertCurrentState(trx, [{ room_id, type: 'm.room.name', state_key: '', event_id, membership: null, stream_ordering: 42n }])
 */
export async function upsertCurrentState(trx: Transaction<Database>, rows: readonly Insertable<CurrentStateEventsTable>[]): Promise<void> {
  for (const chunk of chunks(rows, 6)) {
    await trx
      .insertInto('current_state_events')
      .values(chunk)
      .onConflict((oc) =>
        oc.columns(['room_id', 'type', 'state_key']).doUpdateSet((eb) => ({
          event_id: eb.ref('excluded.event_id'),
          membership: eb.ref('excluded.membership'),
          stream_ordering: eb.ref('excluded.stream_ordering'),
        })),
      )
      .execute()
  }
}

/**
 * Updates backward extremities after importing events: the imported events stop being backward
 * extremities, and `missing` (prev_events that are not stored) become ones.
 *
 * @example
 * await updateBackwardExtremities(trx, roomId, { stored: ['$imported'], missing: ['$older'] })
 */
export async function updateBackwardExtremities(
  trx: Transaction<Database>,
  roomId: string,
  change: { readonly stored: readonly string[]; readonly missing: readonly string[] },
): Promise<void> {
  if (change.stored.length > 0) {
    await trx
      .deleteFrom('event_backward_extremities')
      .where('room_id', '=', roomId)
      .where('event_id', 'in', [...change.stored])
      .execute()
  }
  for (const chunk of chunks(change.missing, 2)) {
    await trx
      .insertInto('event_backward_extremities')
      .values(chunk.map((event_id) => ({ room_id: roomId, event_id })))
      .onConflict((oc) => oc.doNothing())
      .execute()
  }
}

/**
 * Inserts a new room's head row; `false` when the room already exists (another writer created
 * it concurrently: its row lock made this statement wait for that commit).
 *
 * @example
 * await insertRoomHead(trx, { room_id, room_version: '11', creator, created_ts: Date.now(), owner: 'persister1', epoch: 1n })
 */
export async function insertRoomHead(trx: Transaction<Database>, row: Insertable<RoomsTable>): Promise<boolean> {
  const inserted = await trx
    .insertInto('rooms')
    .values(row)
    .onConflict((oc) => oc.column('room_id').doNothing())
    .returning('room_id')
    .executeTakeFirst()
  return inserted !== undefined
}

/**
 * Makes `writer` the room's owner and bumps the epoch; returns the new epoch. The caller MUST
 * hold the head row lock.
 *
 * @example
 * const epoch = await claimRoomHead(trx, roomId, 'persister2') // 2n after persister1's epoch 1
 */
export async function claimRoomHead(trx: Transaction<Database>, roomId: string, writer: string): Promise<bigint> {
  const row = await trx
    .updateTable('rooms')
    .set((eb) => ({ owner: writer, epoch: eb('epoch', '+', 1n) }))
    .where('room_id', '=', roomId)
    .returning('epoch')
    .executeTakeFirstOrThrow()
  return row.epoch
}

/**
 * Moves the room's head past a batch of live events, in one statement: replaces the whole
 * forward-extremity set by `extremities` (non-empty: a batch always leaves its last event as
 * one) and advances the head's high-water marks.
 *
 * @example
 * await advanceRoom(trx, roomId, { extremities: ['$latest'], maxDepth: 18n, lastStreamOrdering: 1234n })
 */
export async function advanceRoom(
  trx: Transaction<Database>,
  roomId: string,
  head: { readonly extremities: readonly string[]; readonly maxDepth: bigint; readonly lastStreamOrdering: bigint },
): Promise<void> {
  // The extremities not kept are deleted, the new ones inserted (a kept one conflicts with
  // itself and stays); data-modifying CTEs run whether or not the outer statement reads them.
  await trx
    .with('dropped', (db) =>
      db
        .deleteFrom('event_forward_extremities')
        .where('room_id', '=', roomId)
        .where('event_id', 'not in', [...head.extremities])
        .returning('event_id'),
    )
    .with('advanced', (db) =>
      db
        .updateTable('rooms')
        .set({ max_depth: head.maxDepth, last_stream_ordering: head.lastStreamOrdering })
        .where('room_id', '=', roomId)
        .returning('room_id'),
    )
    .insertInto('event_forward_extremities')
    .values(head.extremities.map((event_id) => ({ room_id: roomId, event_id })))
    .onConflict((oc) => oc.doNothing())
    .execute()
}

function chunks<T>(rows: readonly T[], columns: number): T[][] {
  if (rows.length === 0) return []
  const size = Math.max(1, Math.floor(maxParameters / columns))
  const out: T[][] = []
  for (let i = 0; i < rows.length; i += size) out.push(rows.slice(i, i + size))
  return out
}
