import { CompiledQuery, sql } from 'kysely'
import type { Insertable, Kysely, Transaction } from 'kysely'
import type {
  CurrentStateEventsTable,
  Database,
  EventEdgesTable,
  EventJsonTable,
  EventsTable,
  EventRelationsTable,
  EventTxnIdsTable,
  RedactionsTable,
  ReplicationRequestsTable,
  RoomMembershipsTable,
  RoomsTable,
  StateEventsTable,
} from '../schema.js'

/**
 * The writes of persist batches: a handful of statements per batch whatever its size, each with
 * a fixed text (rows travel as one array parameter per column), so PostgreSQL prepares them once
 * per connection.
 *
 * Callers MUST hold the room's head row lock (`lockRoomHeads`) in the same transaction: these
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
  readonly relations: readonly Insertable<EventRelationsTable>[]
  readonly txnIds: readonly Insertable<EventTxnIdsTable>[]
  readonly replicationRequests: readonly Insertable<ReplicationRequestsTable>[]
}

/** `EventBatchRows` with mutable arrays, for building a batch's rows. */
export type MutableBatchRows = { [K in keyof EventBatchRows]: EventBatchRows[K][number][] }

/** A batch with no rows yet. */
export function emptyBatchRows(): MutableBatchRows {
  return { events: [], eventJson: [], edges: [], stateEvents: [], redactions: [], memberships: [], relations: [], txnIds: [], replicationRequests: [] }
}

/** A table a batch writes: its columns with their PostgreSQL types, in `Insertable` key order. */
interface TableSpec {
  readonly key: keyof EventBatchRows
  readonly table: string
  /**
   * `select` replaces the column's value in the SELECT list (it reads the unnest alias `cN`);
   * `lines` sends a text column as ONE parameter of newline-joined values (split by
   * `string_to_array`): for canonical JSON, which never holds a raw newline, this skips the array
   * literal's quoting and escaping of every `"` on both ends; `ordering` marks a stream
   * ordering, which `writeBatchGuarded` maps from an index into its allocation.
   */
  readonly columns: readonly (readonly [name: string, type: string, select?: string, transport?: 'lines' | 'ordering'])[]
  readonly onConflict?: string
}

const batchTables: readonly TableSpec[] = [
  {
    key: 'events',
    table: 'events',
    columns: [
      ['stream_ordering', 'int8', undefined, 'ordering'],
      ['event_id', 'text'],
      ['room_id', 'text'],
      ['type', 'text'],
      ['state_key', 'text'],
      ['sender', 'text'],
      ['origin_server_ts', 'int8'],
      ['received_ts', 'int8'],
      ['depth', 'int8'],
      ['instance_name', 'text'],
      ['redacts', 'text'],
      ['membership', 'text'],
    ],
  },
  { key: 'eventJson', table: 'event_json', columns: [['event_id', 'text'], ['room_id', 'text'], ['json', 'text', undefined, 'lines']] },
  { key: 'edges', table: 'event_edges', columns: [['event_id', 'text'], ['prev_event_id', 'text'], ['room_id', 'text']], onConflict: 'ON CONFLICT DO NOTHING' },
  {
    key: 'stateEvents',
    table: 'state_events',
    columns: [['event_id', 'text'], ['room_id', 'text'], ['type', 'text'], ['state_key', 'text'], ['prev_state_event_id', 'text']],
  },
  { key: 'redactions', table: 'redactions', columns: [['event_id', 'text'], ['redacts', 'text']] },
  {
    key: 'memberships',
    table: 'room_memberships',
    columns: [
      ['event_id', 'text'],
      ['room_id', 'text'],
      ['user_id', 'text'],
      ['sender', 'text'],
      ['membership', 'text'],
      ['stream_ordering', 'int8', undefined, 'ordering'],
      ['depth', 'int8'],
    ],
  },
  {
    key: 'relations',
    table: 'event_relations',
    columns: [
      ['event_id', 'text'],
      ['relates_to_id', 'text'],
      ['relation_type', 'text'],
      ['aggregation_key', 'text'],
      ['room_id', 'text'],
      ['sender', 'text'],
      ['type', 'text'],
      ['stream_ordering', 'int8', undefined, 'ordering'],
    ],
  },
  {
    key: 'txnIds',
    table: 'event_txn_ids',
    columns: [['room_id', 'text'], ['user_id', 'text'], ['device_id', 'text'], ['txn_id', 'text'], ['event_id', 'text'], ['inserted_ts', 'int8']],
  },
  {
    key: 'replicationRequests',
    table: 'replication_requests',
    // An array column cannot ride in unnest (it would flatten): each row's IDs travel as a JSON array.
    columns: [
      ['request_id', 'text'],
      ['first_idx', 'int4'],
      ['event_ids', 'text', 'ARRAY(SELECT jsonb_array_elements_text(c2::jsonb))'],
      ['inserted_ts', 'int8'],
    ],
  },
]

/**
 * One piece of a batch's statement: CTEs (name, body) whose bodies use `$` placeholders for
 * `parameters`, in order (`p[i]` is the placeholder of `parameters[i]`, and may appear twice).
 * With `guard`, every write is conditioned on `guard.ok` and stream orderings are mapped
 * through `guard.ordering` (see `writeBatchGuarded`).
 */
interface StatementPart {
  /** Identifies the text of `ctes` (the statement cache's key). */
  readonly key: string
  readonly parameters: readonly unknown[]
  readonly ctes: (p: readonly string[], guard?: Guard) => [name: string, body: string][]
}

/** SQL of the guarded form: the condition every write waits on, and index → allocated stream ordering. */
interface Guard {
  readonly ok: string
  readonly ordering: (index: string) => string
}

const guard: Guard = {
  ok: '(SELECT ok FROM verified)',
  ordering: (index) => `(SELECT ids FROM allocated)[${index}::int]`,
}

/** Statement texts by the keys of their parts (a few dozen combinations, so the prepared set stays bounded). */
const batchStatements = new Map<string, string>()

/**
 * What one persist transaction writes after its reads: the rows of every table, current state,
 * and each advanced room's new forward extremities and head marks.
 */
export interface BatchWrite {
  readonly rows: EventBatchRows
  /** At most one row per (room_id, type, state_key): the caller keeps only the last event per key. */
  readonly currentState?: readonly Insertable<CurrentStateEventsTable>[]
  readonly advances?: readonly RoomAdvance[]
}

/** Where a batch leaves one room: its whole forward-extremity set and its head's high-water marks. */
export interface RoomAdvance {
  readonly roomId: string
  /** Non-empty: a batch always leaves its last event as one. */
  readonly extremities: readonly string[]
  readonly maxDepth: bigint
  readonly lastStreamOrdering: bigint
}

/**
 * Writes a batch in ONE statement: each table's insert, the current state upsert and the rooms'
 * advance are data-modifying CTEs (PostgreSQL runs them whether or not the outer statement reads
 * them), reading `unnest` of one array parameter per column. The text depends only on which
 * parts are present, so PostgreSQL parses and plans it once per connection
 * (storage/database.ts prepares it), whatever the batch size, and no batch comes near the
 * protocol's parameter limit.
 *
 * Advancing a room sets its head row's whole forward-extremity set (`forward_extremities`,
 * sorted, each ID once), `max_depth` and `last_stream_ordering`, in one update that changes no
 * indexed column (a HOT update: no dead index entries, the old version pruned in its page).
 *
 * @example
 * await writeBatch(trx, { rows, currentState, advances: [{ roomId, extremities: ['$latest'], maxDepth: 18n, lastStreamOrdering: 1234n }] })
 */
export async function writeBatch(trx: Transaction<Database>, write: BatchWrite): Promise<void> {
  const parts = writeParts(write)
  if (parts.length === 0) return
  await trx.executeQuery(CompiledQuery.raw(statementText(parts), parts.flatMap((part) => part.parameters)))
}

/** The heads a guarded write expects, and its allocation. */
export interface WriteGuard {
  readonly writer: string
  /** Each room's head row as the write was planned against: owner `writer`, this epoch and last stream ordering. */
  readonly heads: readonly { readonly roomId: string; readonly epoch: bigint; readonly lastStreamOrdering: bigint | null }[]
  /** Stream IDs to allocate; the write's stream orderings are 1-based indexes into them. */
  readonly count: number
  /** The sequence to allocate from (`nextval`). */
  readonly sequence: string
}

/**
 * `writeBatch` as ONE statement that needs no transaction block around it: it locks the rooms'
 * head rows (in room ID order), checks each still names `guard.writer` at the expected epoch
 * and last stream ordering, and only then allocates `guard.count` IDs from the sequence and
 * writes; when a head moved on it writes nothing and allocates nothing. The write's stream
 * orderings (events, memberships, current state, rooms' last stream ordering) are given as
 * 1-based indexes into the allocation, which is ascending.
 *
 * @returns whether it wrote, and the IDs it allocated (ascending; empty when it did not write).
 * @example
 * const { ok, ids } = await writeBatchGuarded(db, write, { writer: 'p1', heads, count: 3, sequence: 'events_stream_seq' })
 */
export async function writeBatchGuarded(db: Kysely<Database>, write: BatchWrite, expected: WriteGuard): Promise<{ ok: boolean; ids: bigint[] }> {
  const check: StatementPart = {
    key: 'guard',
    parameters: [
      expected.heads.map((h) => h.roomId),
      expected.heads.map((h) => h.epoch),
      expected.heads.map((h) => h.lastStreamOrdering),
      expected.writer,
      expected.count,
      expected.sequence,
    ],
    // `allocated` reads `verified`, which reads `locked`: the IDs are taken after the locks, so
    // within a room stream order follows the DAG even when two writers contend for it.
    ctes: ([rooms, epochs, orderings, writer, count, sequence]) => [
      [
        'locked',
        `SELECT r.room_id, r.owner = ${writer}::text AND r.epoch = c.epoch AND r.last_stream_ordering IS NOT DISTINCT FROM c.last_stream_ordering AS ok
         FROM unnest(${rooms}::text[], ${epochs}::int8[], ${orderings}::int8[]) AS c(room_id, epoch, last_stream_ordering)
         JOIN rooms r ON r.room_id = c.room_id ORDER BY r.room_id FOR UPDATE OF r`,
      ],
      ['verified', `SELECT count(*) = cardinality(${rooms}::text[]) AND coalesce(bool_and(ok), false) AS ok FROM locked`],
      [
        'allocated',
        `SELECT coalesce(array_agg(id ORDER BY id), '{}') AS ids
         FROM (SELECT nextval(${sequence}::regclass) AS id FROM generate_series(1, ${count}::int) WHERE ${guard.ok}) AS s`,
      ],
    ],
  }
  const parts = [check, ...writeParts(write)]
  const { rows } = await db.executeQuery<{ ok: boolean; ids: (string | bigint)[] }>(
    CompiledQuery.raw(statementText(parts, guard, 'SELECT (SELECT ok FROM verified) AS ok, (SELECT ids FROM allocated) AS ids'), parts.flatMap((part) => part.parameters)),
  )
  const row = rows[0]
  return { ok: row?.ok === true, ids: (row?.ids ?? []).map((id) => BigInt(id)) }
}

function writeParts(write: BatchWrite): StatementPart[] {
  const parts: StatementPart[] = batchTables.filter((spec) => write.rows[spec.key].length > 0).map((spec) => tablePart(spec, write.rows[spec.key]))
  if (write.currentState !== undefined && write.currentState.length > 0) parts.push(currentStatePart(write.currentState))
  if (write.advances !== undefined && write.advances.length > 0) parts.push(advancePart(write.advances))
  return parts
}

/** The cached text of a statement made of `parts` (placeholders numbered across them). */
function statementText(parts: readonly StatementPart[], withGuard?: Guard, select = 'SELECT 1'): string {
  const key = `${withGuard === undefined ? '' : 'guarded:'}${parts.map((part) => part.key).join(',')}`
  let text = batchStatements.get(key)
  if (text === undefined) {
    let n = 0
    const ctes = parts.flatMap((part) => part.ctes(part.parameters.map(() => `$${++n}`), withGuard))
    text = `WITH ${ctes.map(([name, body]) => `${name} AS (${body})`).join(', ')} ${select}`
    batchStatements.set(key, text)
  }
  return text
}

/**
 * Inserts a batch's rows (see `writeBatch`); for imports, which touch neither current state nor
 * forward extremities.
 *
 * @example
 * await appendEventRows(trx, { events, eventJson, edges, stateEvents: [], redactions: [],
 *   memberships: [], txnIds: [], replicationRequests: [] })
 */
export async function appendEventRows(trx: Transaction<Database>, rows: EventBatchRows): Promise<void> {
  await writeBatch(trx, { rows })
}

function tablePart(spec: TableSpec, rows: readonly object[]): StatementPart {
  const asLines: boolean[] = []
  const parameters = spec.columns.map(([name, , select, transport]) => {
    const values = rows.map((row) => (row as Record<string, unknown>)[name] ?? null)
    const lines = transport === 'lines' && values.every((value) => typeof value === 'string' && value !== '' && !value.includes('\n'))
    asLines.push(lines)
    if (lines) return values.join('\n')
    return select === undefined ? values : values.map((value) => JSON.stringify(value))
  })
  return {
    key: `${spec.key}${asLines.map((lines) => (lines ? 'L' : 'A')).join('')}`,
    parameters,
    ctes: (p, g) => {
      const columns = spec.columns.map(([name]) => name).join(', ')
      const arrays = spec.columns.map(([, type], i) => (asLines[i] ? `string_to_array(${p[i]}::text, E'\\n')` : `${p[i]}::${type}[]`)).join(', ')
      const aliases = spec.columns.map((_, i) => `c${i}`).join(', ')
      const selects = spec.columns.map(([, , select, transport], i) => select ?? (g !== undefined && transport === 'ordering' ? g.ordering(`c${i}`) : `c${i}`)).join(', ')
      const where = g === undefined ? '' : ` WHERE ${g.ok}`
      const conflict = spec.onConflict === undefined ? '' : ` ${spec.onConflict}`
      return [[`insert_${spec.table}`, `INSERT INTO ${spec.table} (${columns}) SELECT ${selects} FROM unnest(${arrays}) AS u(${aliases})${where}${conflict}`]]
    },
  }
}

function currentStatePart(rows: readonly Insertable<CurrentStateEventsTable>[]): StatementPart {
  return {
    key: 'currentState',
    parameters: (['room_id', 'type', 'state_key', 'event_id', 'membership', 'stream_ordering'] as const).map((name) => column(rows, name)),
    ctes: (p, g) => [
      [
        'upsert_current_state',
        `INSERT INTO current_state_events (room_id, type, state_key, event_id, membership, stream_ordering)
         SELECT c0, c1, c2, c3, c4, ${g === undefined ? 'c5' : g.ordering('c5')}
         FROM unnest(${p[0]}::text[], ${p[1]}::text[], ${p[2]}::text[], ${p[3]}::text[], ${p[4]}::text[], ${p[5]}::int8[]) AS u(c0, c1, c2, c3, c4, c5)
         ${g === undefined ? '' : `WHERE ${g.ok}`}
         ON CONFLICT (room_id, type, state_key) DO UPDATE
           SET event_id = excluded.event_id, membership = excluded.membership, stream_ordering = excluded.stream_ordering`,
      ],
    ],
  }
}

function advancePart(rooms: readonly RoomAdvance[]): StatementPart {
  const pairs = rooms.flatMap((room) => room.extremities.map((eventId) => [room.roomId, eventId] as const))
  return {
    key: 'advance',
    parameters: [
      rooms.map((r) => r.roomId),
      rooms.map((r) => r.maxDepth),
      rooms.map((r) => r.lastStreamOrdering),
      pairs.map((pair) => pair[0]),
      pairs.map((pair) => pair[1]),
    ],
    // The `= ANY(rooms)` conditions give the planner index scans on the rooms' rows.
    ctes: ([rooms, depths, orderings, keptRooms, keptEvents], g) => [
      [
        'heads',
        `SELECT h.room_id, h.max_depth, h.last_stream_ordering
         FROM unnest(${rooms}::text[], ${depths}::int8[], ${orderings}::int8[]) AS h(room_id, max_depth, last_stream_ordering)`,
      ],
      ['kept', `SELECT k.room_id, k.event_id FROM unnest(${keptRooms}::text[], ${keptEvents}::text[]) AS k(room_id, event_id)`],
      [
        'advanced',
        `UPDATE rooms r SET max_depth = h.max_depth, last_stream_ordering = ${g === undefined ? 'h.last_stream_ordering' : g.ordering('h.last_stream_ordering')},
           forward_extremities = coalesce((SELECT array_agg(DISTINCT k.event_id ORDER BY k.event_id) FROM kept k WHERE k.room_id = h.room_id), '{}')
         FROM heads h WHERE r.room_id = ANY(${rooms}::text[]) AND r.room_id = h.room_id${g === undefined ? '' : ` AND ${g.ok}`}`,
      ],
    ],
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
    await sql`DELETE FROM event_backward_extremities WHERE room_id = ${roomId} AND event_id = ANY(${change.stored}::text[])`.execute(trx)
  }
  if (change.missing.length > 0) {
    await sql`
      INSERT INTO event_backward_extremities (room_id, event_id) SELECT ${roomId}, unnest(${change.missing}::text[])
      ON CONFLICT DO NOTHING`.execute(trx)
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

/** One column of `rows` as an array parameter (absent values as NULL). */
function column<T extends object>(rows: readonly T[], name: keyof T): unknown[] {
  return rows.map((row) => row[name] ?? null)
}
