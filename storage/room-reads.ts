import { sql, type Kysely, type RawBuilder, type SqlBool } from 'kysely'
import { StorageError } from './errors.js'
import { redactEvent, type JsonObject } from './events/redaction.js'
import { retentionRule, type RetentionRule } from './history-purge.js'
import type { Database } from './schema.js'
import { RoomStreamToken } from './streams/room-stream-token.js'

/**
 * Reads of rooms for the client API (ARCHITECTURE §7): who may see what (history visibility),
 * state, members, `/messages` pagination, `/context`, and events in the client format. /sync
 * (storage/sync.ts) builds on the same pieces.
 *
 * Positions. A *key* is an event's `(depth, stream_ordering)`: the topological order of
 * `/messages`. Tokens bound reads two ways (`rowCoveredBy`, `rowAfter`):
 * - a historic token `t<d>-<s>` is a point in topological order: it covers the events whose key
 *   is ≤ `(d, s)`. Pagination hands out `t<depth>-<stream-1>` for "just before this event";
 * - a live or vector token covers, per writer, the events at stream orderings ≤ its position
 *   (imported events, at negative stream orderings, are always covered).
 * Every read is also bounded by the caller's `upTo` (the process's tracker token), so an event
 * committed but not yet announced is never served (readers never skip: ARCHITECTURE §2).
 *
 * Visibility (client-server API "History visibility", as Synapse): an event is visible to a
 * user when the user is its `state_key` of an `m.room.member` event; else by the
 * `m.room.history_visibility` in force before it (the more restrictive of old and new for a
 * visibility change itself; default `shared`): `world_readable` always; otherwise when the
 * user's membership at the event (their latest membership event with key ≤ the event's) is
 * `join`; `shared` also when the user's latest membership is `join`; `invited` also when the
 * membership at the event is `invite`. With message retention on (migration 0032), a non-state
 * event sent before now less its room's lifetime is visible to nobody, as in Synapse: it waits
 * for the retention purge (api/retention.ts) hidden.
 *
 * Rooms not in `rooms` are `ES_ROOM_NOT_FOUND`; rooms the user may not read are `ES_FORBIDDEN`;
 * events not in the room, not stored or not visible are `ES_EVENT_NOT_FOUND`.
 */

type Db = Kysely<Database>

/** An event's place in topological order. */
export interface EventKey {
  readonly depth: bigint
  readonly streamOrdering: bigint
}

/** One stored event as the reads handle it. */
export interface EventRow extends EventKey {
  readonly eventId: string
  readonly roomId: string
  readonly type: string
  readonly stateKey: string | null
  readonly sender: string
  /** The signed PDU without `event_id` (as stored). */
  readonly pdu: JsonObject
}

/** Who reads: transaction IDs are shown only to the device that sent the event. */
export interface Viewer {
  readonly userId: string
  readonly deviceId?: string
}

/** `m.room.history_visibility` values, least restrictive first. */
export const historyVisibilities = ['world_readable', 'shared', 'invited', 'joined'] as const
export type HistoryVisibility = (typeof historyVisibilities)[number]

/** Filter on events (client-server API `EventFilter` / `RoomEventFilter`, the parts served here). */
export interface EventFilter {
  /** Allowed types (`*` matches any run of characters); absent: every type. */
  readonly types?: readonly string[]
  readonly notTypes: readonly string[]
  readonly senders?: readonly string[]
  readonly notSenders: readonly string[]
  /** true: only events whose content has a `url`; false: only those without. */
  readonly containsUrl?: boolean
}

/** The filter that lets everything through. */
export const noEventFilter: EventFilter = Object.freeze({ notTypes: [], notSenders: [] })

/**
 * Reads an `EventFilter` from filter JSON (already validated against api/filter-schema.ts;
 * unknown fields ignored).
 *
 * @example
 * parseEventFilter({ types: ['m.room.message'], not_senders: ['@spam:x'] })
 * // { types: ['m.room.message'], notTypes: [], notSenders: ['@spam:x'] }
 */
export function parseEventFilter(json: unknown): EventFilter {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) return noEventFilter
  const f = json as Record<string, unknown>
  const list = (value: unknown): string[] | undefined => (Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : undefined)
  return {
    ...(list(f['types']) !== undefined && { types: list(f['types']) }),
    notTypes: list(f['not_types']) ?? [],
    ...(list(f['senders']) !== undefined && { senders: list(f['senders']) }),
    notSenders: list(f['not_senders']) ?? [],
    ...(typeof f['contains_url'] === 'boolean' && { containsUrl: f['contains_url'] }),
  }
}

// ---------------------------------------------------------------------------------------------
// SQL building blocks (queries alias events `e` and LEFT JOIN instances `i` on instance_name)

/** Position of the row's writer in a live/vector token (SQL). */
function writerPosition(token: RoomStreamToken): RawBuilder<unknown> {
  const entries = [...token.positions()]
  if (entries.length === 0) return sql`${token.stream}::int8`
  const cases = entries.map(([id, position]) => sql`WHEN ${id}::int4 THEN ${position}::int8`)
  return sql`(CASE i.instance_id ${sql.join(cases, sql` `)} ELSE ${token.stream}::int8 END)`
}

/**
 * SQL: the event row `e` is covered by `token` (see the module comment). Needs `i` joined.
 *
 * @example
 * db.selectFrom('events as e').leftJoin('instances as i', 'i.instance_name', 'e.instance_name').where(rowCoveredBy(token))
 */
export function rowCoveredBy(token: RoomStreamToken): RawBuilder<SqlBool> {
  if (token.topological !== undefined) return sql<SqlBool>`(e.depth, e.stream_ordering) <= (${token.topological}::int8, ${token.stream}::int8)`
  return sql<SqlBool>`(e.stream_ordering <= ${token.maxPosition()}::int8 AND e.stream_ordering <= ${writerPosition(token)})`
}

/** SQL: the event row `e` is after `token` (not covered by it). Needs `i` joined. */
export function rowAfter(token: RoomStreamToken): RawBuilder<SqlBool> {
  if (token.topological !== undefined) return sql<SqlBool>`(e.depth, e.stream_ordering) > (${token.topological}::int8, ${token.stream}::int8)`
  return sql<SqlBool>`(e.stream_ordering > ${token.stream}::int8 AND e.stream_ordering > ${writerPosition(token)})`
}

/** SQL: the event row `e` matches `filter` (everything but `containsUrl`). */
export function rowMatches(filter: EventFilter): RawBuilder<SqlBool> {
  const parts: RawBuilder<SqlBool>[] = [sql<SqlBool>`true`]
  const typeLike = (types: readonly string[]) =>
    sql.join(types.map((t) => sql`e.type LIKE ${t.replace(/[\\%_]/g, (c) => `\\${c}`).replace(/\*/g, '%')}`), sql` OR `)
  if (filter.types !== undefined) parts.push(filter.types.length === 0 ? sql<SqlBool>`false` : sql<SqlBool>`(${typeLike(filter.types)})`)
  if (filter.notTypes.length > 0) parts.push(sql<SqlBool>`NOT (${typeLike(filter.notTypes)})`)
  if (filter.senders !== undefined) parts.push(sql<SqlBool>`e.sender = ANY(${[...filter.senders]}::text[])`)
  if (filter.notSenders.length > 0) parts.push(sql<SqlBool>`NOT (e.sender = ANY(${[...filter.notSenders]}::text[]))`)
  return sql<SqlBool>`(${sql.join(parts, sql` AND `)})`
}

export function eventsQuery(db: Db) {
  return db
    .selectFrom('events as e')
    .innerJoin('event_json as j', 'j.event_id', 'e.event_id')
    .leftJoin('instances as i', 'i.instance_name', 'e.instance_name')
    .select(['e.event_id', 'e.room_id', 'e.type', 'e.state_key', 'e.sender', 'e.depth', 'e.stream_ordering', 'j.json'])
    .where('e.outlier', '=', false)
}

/** An `events` row joined with its JSON, as read by the queries here. */
export interface RawEventRow {
  event_id: string
  room_id: string
  type: string
  state_key: string | null
  sender: string
  depth: bigint
  stream_ordering: bigint
  json: string
}

export function toRow(raw: RawEventRow): EventRow {
  return {
    eventId: raw.event_id,
    roomId: raw.room_id,
    type: raw.type,
    stateKey: raw.state_key,
    sender: raw.sender,
    depth: raw.depth,
    streamOrdering: raw.stream_ordering,
    pdu: JSON.parse(raw.json) as JsonObject,
  }
}

/**
 * `rows` that satisfy `filter.containsUrl` (the one part of a filter not applied in SQL).
 *
 * @example
 * filterContainsUrl(rows, { notTypes: [], notSenders: [], containsUrl: true })
 */
export function filterContainsUrl(rows: EventRow[], filter: EventFilter): EventRow[] {
  if (filter.containsUrl === undefined) return rows
  return rows.filter((row) => {
    const content = row.pdu['content'] as JsonObject | undefined
    return (typeof content?.['url'] === 'string') === filter.containsUrl
  })
}

/**
 * Events of one room matching `where` and `filter` (all but `containsUrl`, see
 * `filterContainsUrl`), in `order`, at most `limit`.
 *
 * @example
 * await queryEvents(db, roomId, [rowCoveredBy(upTo)], 'topological-desc', 11, noEventFilter)
 */
export async function queryEvents(
  db: Db,
  roomId: string,
  where: readonly RawBuilder<SqlBool>[],
  order: PageOrder,
  limit: number,
  filter: EventFilter = noEventFilter,
): Promise<EventRow[]> {
  return (await pageQuery(db, { roomId, where, order, limit, filter }).execute()).map(toRow)
}

/** Orders of a page of events: topological (`/messages`, initial sync) or stream (live). */
export type PageOrder = 'topological-desc' | 'topological-asc' | 'stream-desc' | 'stream-asc'

/** Which events of one room a page holds (see `queryEvents`). */
export interface PageSpec {
  readonly roomId: string
  readonly where: readonly RawBuilder<SqlBool>[]
  readonly order: PageOrder
  readonly limit: number
  readonly filter: EventFilter
}

function pageQuery(db: Db, page: PageSpec) {
  let query = eventsQuery(db).where('e.room_id', '=', page.roomId).where(rowMatches(page.filter))
  for (const condition of page.where) query = query.where(condition)
  const direction = page.order.endsWith('desc') ? 'desc' : 'asc'
  if (page.order.startsWith('topological')) query = query.orderBy('e.depth', direction)
  return query.orderBy('e.stream_ordering', direction).limit(page.limit)
}

/** A page of events with what showing it to one user needs (see `readPage`). */
export interface ReadPage {
  /** The page, in its order. */
  readonly rows: EventRow[]
  /** Those of `subset` (rows of the page) the viewer may see, in the order given. */
  visible(subset: readonly EventRow[]): EventRow[]
  /**
   * A former of the client events of `subset` (rows of the page): it reads what only some
   * pages need (the viewer's transaction IDs, replaced state), nothing for most.
   */
  former(subset: readonly EventRow[]): Promise<(visible: readonly EventRow[], now: number) => JsonObject[]>
}

/**
 * Reads a page of one room's events for `viewer` in ONE round trip of two statements run
 * concurrently: the page with its redactions and the relations to bundle into its events, and
 * the room's visibility to the viewer. The rows come back in the page's order.
 *
 * @example
 * const page = await readPage(db, { roomId, where: [rowCoveredBy(upTo)], order: 'topological-desc', limit: 11, filter }, viewer)
 * const visible = page.visible(page.rows.slice(0, 10))
 * const events = (await page.former(visible))(visible, Date.now())
 */
export async function readPage(db: Db, spec: PageSpec, viewer: Viewer): Promise<ReadPage> {
  // One statement for the page and its redactions (a redaction row names what it redacts), one
  // for the visibility: each query in flight waits for a PostgreSQL backend to get a core.
  const [raw, visibility] = await Promise.all([
    db
      .with('page', () => pageQuery(db, spec))
      .selectFrom('page')
      .select([
        'page.event_id',
        'page.room_id',
        'page.type',
        'page.state_key',
        'page.sender',
        'page.depth',
        'page.stream_ordering',
        'page.json',
        sql<string | null>`NULL`.as('redacts'),
        sql<string | null>`NULL`.as('aggregate'),
      ])
      .unionAll(redactionsQuery(db).select(sql<string | null>`NULL`.as('aggregate')).where(sql<SqlBool>`r.redacts IN (SELECT event_id FROM page)`))
      // Aggregate rows may lack an event (references): typed as the page's rows, told apart by `aggregate`.
      .unionAll(aggregatesSelect(sql`(SELECT event_id FROM page)`, viewer.userId) as unknown as RawBuilder<RawEventRow & { redacts: null; aggregate: string }>)
      .execute(),
    loadVisibility(db, viewer.userId, [spec.roomId]),
  ])
  const vis = visibility.get(spec.roomId) as RoomVisibility
  const aggregations = raw.filter((row) => row.aggregate !== null).map((row) => toAggregate(row as PageStatementRow))
  const redactions = raw.filter((row): row is RedactionRow & { aggregate: null } => row.redacts !== null && row.aggregate === null)
  return {
    rows: raw.filter((row) => row.redacts === null && row.aggregate === null).map(toRow).sort(pageComparator(spec.order)),
    visible: (subset) => subset.filter((row) => isVisible(row, viewer.userId, vis)),
    former: (subset) => clientFormer(db, subset, viewer, { redactions, aggregations }),
  }
}

/**
 * The token just before `key` in topological order (`t<depth>-<stream-1>`): paginating
 * backwards from it returns the events before that event.
 *
 * @example
 * tokenBefore({ depth: 7n, streamOrdering: 42n }).toString() // 't7-41'
 */
export function tokenBefore(key: EventKey): RoomStreamToken {
  return RoomStreamToken.historic(key.depth, key.streamOrdering - 1n)
}

/** The token just at `key` (`t<depth>-<stream>`): covers the event and everything before it. */
export function tokenAt(key: EventKey): RoomStreamToken {
  return RoomStreamToken.historic(key.depth, key.streamOrdering)
}

function compareKeys(a: EventKey, b: EventKey): number {
  if (a.depth !== b.depth) return a.depth < b.depth ? -1 : 1
  if (a.streamOrdering !== b.streamOrdering) return a.streamOrdering < b.streamOrdering ? -1 : 1
  return 0
}

// ---------------------------------------------------------------------------------------------
// State

/**
 * The room's state made of state events matching `where` (the latest per type and state key in
 * topological order), e.g. the state before an event (`rowAfter` excluded, key below it).
 *
 * @example
 * const before = await stateWhere(db, roomId, [sql`(e.depth, e.stream_ordering) < (${d}, ${s})`])
 */
export async function stateWhere(db: Db, roomId: string, where: readonly RawBuilder<SqlBool>[], filter: EventFilter = noEventFilter): Promise<EventRow[]> {
  let query = db
    .selectFrom('state_events as s')
    .innerJoin('events as e', 'e.event_id', 's.event_id')
    .innerJoin('event_json as j', 'j.event_id', 'e.event_id')
    .leftJoin('instances as i', 'i.instance_name', 'e.instance_name')
    .distinctOn(['s.type', 's.state_key'])
    .select(['e.event_id', 'e.room_id', 'e.type', 'e.state_key', 'e.sender', 'e.depth', 'e.stream_ordering', 'j.json'])
    .where('s.room_id', '=', roomId)
    .where('e.outlier', '=', false)
    .where(rowMatches(filter))
  for (const condition of where) query = query.where(condition)
  const rows = await query.orderBy('s.type').orderBy('s.state_key').orderBy('e.depth', 'desc').orderBy('e.stream_ordering', 'desc').execute()
  return filterContainsUrl(rows.map(toRow), filter)
}

/** SQL: the row `e` is strictly before `key` in topological order. */
export function rowBefore(key: EventKey): RawBuilder<SqlBool> {
  return sql<SqlBool>`(e.depth, e.stream_ordering) < (${key.depth}::int8, ${key.streamOrdering}::int8)`
}

/**
 * The room's state after `key` (inclusive) or before it (`inclusive: false`).
 *
 * @example
 * const state = await stateAt(db, roomId, { depth: 5n, streamOrdering: 17n })
 */
export function stateAt(db: Db, roomId: string, key: EventKey, inclusive = true, filter: EventFilter = noEventFilter): Promise<EventRow[]> {
  return stateWhere(db, roomId, [inclusive ? rowCoveredBy(tokenAt(key)) : rowBefore(key)], filter)
}

// ---------------------------------------------------------------------------------------------
// Visibility

interface KeyedValue<T> extends EventKey {
  readonly value: T
}

/** What deciding the visibility of a room's events to one user needs (one small query per batch of rooms). */
export interface RoomVisibility {
  /** History visibility changes, topological order. */
  readonly visibility: readonly KeyedValue<HistoryVisibility>[]
  /** The user's membership changes, topological order. */
  readonly memberships: readonly KeyedValue<string>[]
  /** The user's latest membership (stream order), or undefined. */
  readonly latest: string | undefined
  /**
   * With message retention on (migration 0032): the non-state events sent before this time (ms)
   * are expired by the room's lifetime and hidden until the retention purge deletes them.
   */
  readonly expiredBefore?: number
}

function asVisibility(value: unknown): HistoryVisibility {
  return historyVisibilities.includes(value as HistoryVisibility) ? (value as HistoryVisibility) : 'shared'
}

type RowKind = 'visibility' | 'membership' | 'expiry'

/**
 * With a retention rule in force (`retention_settings`, migration 0032), a row per room whose
 * `value` is the time (ms, as text) before which its non-state events are expired: now less the
 * room's `m.room.retention` `max_lifetime` held to the rule's bounds, else its default lifetime
 * (NULL without one).
 */
function retentionExpiry(rooms: readonly string[], rule: RetentionRule) {
  const policy = sql`(j.json::jsonb -> 'content' ->> 'max_lifetime')`
  return sql<{ room_id: string; depth: bigint; stream_ordering: bigint; value: string; kind: RowKind }>`
    SELECT u.room_id, 0::int8 AS depth, 0::int8 AS stream_ordering,
      (myelin_now_ms() - CASE WHEN ${policy} ~ '^[1-9][0-9]{0,14}$'
        THEN least(greatest(${policy}::int8, ${rule.allowedLifetimeMinMs ?? 0}::int8), ${rule.allowedLifetimeMaxMs ?? Number.MAX_SAFE_INTEGER}::int8)
        ELSE ${rule.defaultMaxLifetimeMs ?? null}::int8 END)::text AS value,
      'expiry' AS kind
    FROM unnest(${sql.val([...rooms])}::text[]) AS u(room_id)
    LEFT JOIN current_state_events c ON c.room_id = u.room_id AND c.type = 'm.room.retention' AND c.state_key = ''
    LEFT JOIN event_json j ON j.event_id = c.event_id`
}

/**
 * Loads what `isVisible` needs for `userId` in each of `roomIds`.
 *
 * @example
 * const vis = await loadVisibility(db, userId, [roomId])
 * rows.filter((row) => isVisible(row, userId, vis.get(roomId)!))
 */
export async function loadVisibility(db: Db, userId: string, roomIds: readonly string[]): Promise<Map<string, RoomVisibility>> {
  const result = new Map<string, RoomVisibility>()
  if (roomIds.length === 0) return result
  const rooms = [...new Set(roomIds)]
  // One statement: the history visibility events (`value` their JSON), the user's memberships
  // (`value` the membership) and, with retention on (its rule read at most every 10 s), each
  // room's expiry time (`value`).
  const rule = await retentionRule(db)
  const rows = await db
    .selectFrom('state_events as s')
    .innerJoin('events as e', 'e.event_id', 's.event_id')
    .innerJoin('event_json as j', 'j.event_id', 's.event_id')
    .select(['s.room_id', 'e.depth', 'e.stream_ordering', 'j.json as value', sql<RowKind>`'visibility'`.as('kind')])
    .where('s.room_id', 'in', rooms)
    .where('s.type', '=', 'm.room.history_visibility')
    .where('s.state_key', '=', '')
    .where('e.outlier', '=', false)
    .unionAll(
      db
        .selectFrom('room_memberships')
        .select(['room_id', 'depth', 'stream_ordering', 'membership as value', sql<RowKind>`'membership'`.as('kind')])
        .where('user_id', '=', userId)
        .where('room_id', 'in', rooms),
    )
    .$if(rule !== undefined, (qb) => qb.unionAll(retentionExpiry(rooms, rule!)))
    .execute()
  const visibilityRows = rows.filter((row) => row.kind === 'visibility')
  const membershipRows = rows.filter((row) => row.kind === 'membership')
  const expiry = new Map(rows.filter((row) => row.kind === 'expiry' && row.value !== null).map((row) => [row.room_id, Number(row.value)]))
  for (const room of rooms) {
    const visibility = visibilityRows
      .filter((row) => row.room_id === room)
      .map((row) => {
        const content = (JSON.parse(row.value) as JsonObject)['content'] as JsonObject | undefined
        return { depth: row.depth, streamOrdering: row.stream_ordering, value: asVisibility(content?.['history_visibility']) }
      })
      .sort(compareKeys)
    const own = membershipRows.filter((row) => row.room_id === room)
    const memberships = own.map((row) => ({ depth: row.depth, streamOrdering: row.stream_ordering, value: row.value })).sort(compareKeys)
    const latest = own.reduce<(typeof own)[number] | undefined>((a, b) => (a === undefined || b.stream_ordering > a.stream_ordering ? b : a), undefined)
    const expiredBefore = expiry.get(room)
    result.set(room, { visibility, memberships, latest: latest?.value, ...(expiredBefore !== undefined && { expiredBefore }) })
  }
  return result
}

function lastAtOrBefore<T>(list: readonly KeyedValue<T>[], key: EventKey, strict: boolean): T | undefined {
  let found: T | undefined
  for (const entry of list) {
    const c = compareKeys(entry, key)
    if (c > 0 || (strict && c === 0)) break
    found = entry.value
  }
  return found
}

/**
 * Whether `userId` may see `row` (rules in the module comment).
 *
 * @example
 * isVisible(row, '@alice:hs', visibility.get(row.roomId)!) // true
 */
export function isVisible(row: EventRow, userId: string, vis: RoomVisibility): boolean {
  if (vis.expiredBefore !== undefined && row.stateKey === null && Number(row.pdu['origin_server_ts']) < vis.expiredBefore) return false
  if (row.type === 'm.room.member' && row.stateKey === userId) return true
  let visibility = lastAtOrBefore(vis.visibility, row, true) ?? 'shared'
  if (row.type === 'm.room.history_visibility' && row.stateKey === '') {
    const own = asVisibility((row.pdu['content'] as JsonObject | undefined)?.['history_visibility'])
    if (historyVisibilities.indexOf(own) > historyVisibilities.indexOf(visibility)) visibility = own
  }
  if (visibility === 'world_readable') return true
  const membership = lastAtOrBefore(vis.memberships, row, false)
  if (membership === 'join') return true
  if (visibility === 'shared') return vis.latest === 'join'
  if (visibility === 'invited') return membership === 'invite'
  return false
}

/**
 * `rows` without the events `viewer` may not see.
 *
 * @example
 * const visible = await filterVisible(db, 'alice', rows)
 */
export async function filterVisible(db: Db, userId: string, rows: readonly EventRow[]): Promise<EventRow[]> {
  if (rows.length === 0) return []
  const vis = await loadVisibility(db, userId, rows.map((r) => r.roomId))
  return rows.filter((row) => isVisible(row, userId, vis.get(row.roomId)!))
}

// ---------------------------------------------------------------------------------------------
// Client format

/**
 * `rows` in the client event format: `event_id`, `type`, `content`, `sender`,
 * `origin_server_ts`, `room_id`, `state_key` (state events), `redacts` (redactions), and
 * `unsigned`: `age`, `transaction_id` (only for `viewer.deviceId`'s own events),
 * `redacted_because` (and the redacted form), `replaces_state` and `prev_content` (state events
 * that replaced another).
 *
 * @example
 * const [event] = await toClientEvents(db, rows, { userId, deviceId }, Date.now())
 * event.unsigned // { age: 12, transaction_id: 'm1' }
 */
export async function toClientEvents(db: Db, rows: readonly EventRow[], viewer: Viewer, now: number): Promise<JsonObject[]> {
  return (await clientFormer(db, rows, viewer))(rows, now)
}

/**
 * What `toClientEvents` reads for `rows` (their redactions, the viewer's transaction IDs, the
 * state they replaced), as a function that forms any of `rows` (or a subset: the visible ones)
 * once it is read. Lets a caller read it while it reads something else about the same rows.
 *
 * @example
 * const [form, visible] = await Promise.all([clientFormer(db, page, viewer), filterVisible(db, userId, page)])
 * const events = form(visible, Date.now())
 */
export async function clientFormer(
  db: Db,
  rows: readonly EventRow[],
  viewer: Viewer,
  /** The redactions and relation aggregates of `rows` (or more, in any order), when already read (see `readPage`). */
  known?: { readonly redactions: readonly RedactionRow[]; readonly aggregations: readonly AggregateRow[] },
): Promise<(subset: readonly EventRow[], now: number) => JsonObject[]> {
  if (rows.length === 0) return () => []
  const ids = rows.map((r) => r.eventId)
  const stateIds = rows.filter((r) => r.stateKey !== null).map((r) => r.eventId)
  // A transaction ID is stored under its event's sender: only the viewer's own events have one.
  const ownIds = viewer.deviceId === undefined ? [] : rows.filter((r) => r.sender === viewer.userId).map((r) => r.eventId)
  const [redactions, aggregations, txns, replaced] = await Promise.all([
    known?.redactions ?? redactionsQuery(db).where('r.redacts', 'in', ids).execute(),
    known?.aggregations ?? relationAggregates(db, ids, viewer.userId),
    viewer.deviceId === undefined || ownIds.length === 0
      ? Promise.resolve([])
      : db
          .selectFrom('event_txn_ids')
          .select(['event_id', 'txn_id'])
          .where('event_id', 'in', ownIds)
          .where('user_id', '=', viewer.userId)
          .where('device_id', '=', viewer.deviceId)
          .execute(),
    stateIds.length === 0
      ? Promise.resolve([])
      : db
          .selectFrom('state_events as s')
          .innerJoin('event_json as j', 'j.event_id', 's.prev_state_event_id')
          .select(['s.event_id', 's.prev_state_event_id', 'j.json'])
          .where('s.event_id', 'in', stateIds)
          .execute(),
  ])
  // An event redacted more than once shows its first redaction.
  const redactedBy = new Map<string, RedactionRow>()
  for (const r of redactions) {
    const seen = redactedBy.get(r.redacts)
    if (seen === undefined || r.stream_ordering < seen.stream_ordering) redactedBy.set(r.redacts, r)
  }
  const txnOf = new Map(txns.map((t) => [t.event_id, t.txn_id]))
  const prevOf = new Map(replaced.map((p) => [p.event_id, { id: p.prev_state_event_id!, pdu: JSON.parse(p.json) as JsonObject }]))
  const aggregatesOf = new Map<string, AggregateRow[]>()
  for (const a of aggregations) aggregatesOf.set(a.parent, [...(aggregatesOf.get(a.parent) ?? []), a])
  return (subset, now) =>
    subset.map((row) => {
      const redacted = redactedBy.get(row.eventId)
      const event = clientEvent(redacted ? redactEvent(row.pdu) : row.pdu, row, now)
      const unsigned = event['unsigned'] as JsonObject
      if (redacted) {
        const redaction = toRow(redacted)
        unsigned['redacted_because'] = clientEvent(redaction.pdu, redaction, now)
      }
      const txnId = txnOf.get(row.eventId)
      if (txnId !== undefined) unsigned['transaction_id'] = txnId
      const prev = prevOf.get(row.eventId)
      if (prev) {
        unsigned['replaces_state'] = prev.id
        unsigned['prev_content'] = prev.pdu['content'] ?? {}
      }
      const bundled = redacted ? undefined : aggregatesOf.get(row.eventId)
      if (bundled) unsigned['m.relations'] = bundledRelations(row, bundled, viewer.userId, now)
      return event
    })
}

/** A redaction event (`toRow` of it) and the event it redacts. */
type RedactionRow = RawEventRow & { readonly redacts: string }

/** Redaction events with the events they redact (callers add which). */
function redactionsQuery(db: Db) {
  return db
    .selectFrom('redactions as r')
    .innerJoin('events as e', 'e.event_id', 'r.event_id')
    .innerJoin('event_json as j', 'j.event_id', 'r.event_id')
    .select(['e.event_id', 'e.room_id', 'e.type', 'e.state_key', 'e.sender', 'e.depth', 'e.stream_ordering', 'j.json', 'r.redacts'])
}

function compareBigints(a: bigint, b: bigint): number {
  return a < b ? -1 : a > b ? 1 : 0
}

/** The order of a page's rows, as its query sorts them. */
function pageComparator(order: PageOrder): (a: EventRow, b: EventRow) => number {
  const sign = order.endsWith('desc') ? -1 : 1
  if (order.startsWith('topological')) return (a, b) => sign * compareKeys(a, b)
  return (a, b) => sign * compareBigints(a.streamOrdering, b.streamOrdering)
}

/** SQL: the event row `e` relates to `eventId` (with `relType`), its relation not redacted. */
function relatesTo(eventId: string, relType: string | undefined): RawBuilder<SqlBool> {
  return sql<SqlBool>`e.event_id IN (
    SELECT r.event_id FROM event_relations r WHERE r.relates_to_id = ${eventId}${relType === undefined ? sql`` : sql` AND r.relation_type = ${relType}`}
      AND NOT EXISTS (SELECT 1 FROM redactions x WHERE x.redacts = r.event_id))`
}

/** The aggregate of one relation type of one parent event, with its latest event (threads, edits). */
interface AggregateRow {
  readonly parent: string
  readonly rel_type: string
  readonly n: number
  readonly mine: boolean
  readonly ids: string[]
  readonly latest?: EventRow
}

/** Relation types bundled into served events (client-server API "Aggregations of child events"). */
const bundledTypes = ['m.thread', 'm.replace', 'm.reference']

/** A row of `readPage`'s statement: a page event, a redaction (`redacts`), or a relation aggregate (`aggregate`). */
type PageStatementRow = { [K in keyof RawEventRow]: RawEventRow[K] | null } & { redacts: string | null; aggregate: string | null }

/**
 * SQL selecting the aggregates of the relations of the events `parents` (an SQL set of event
 * IDs) to bundle, in the columns of `readPage`'s statement: per parent and type, the latest
 * event (threads: by stream order; edits, by the parent's sender only: by `origin_server_ts`,
 * then event ID; none for references) and, as JSON in `aggregate`, the count, whether `viewer`
 * sent one, and the related event IDs. Redacted relations are left out.
 */
function aggregatesSelect(parents: RawBuilder<unknown>, viewer: string): RawBuilder<PageStatementRow> {
  return sql<PageStatementRow>`
    SELECT e.event_id, e.room_id, e.type, e.state_key, e.sender, e.depth, e.stream_ordering, j.json, NULL::text AS redacts,
           json_build_object('parent', agg.parent, 'rel_type', agg.rel_type, 'n', agg.n, 'mine', agg.mine, 'ids', agg.ids)::text AS aggregate
    FROM (
      SELECT parent, rel_type, count(*) AS n, bool_or(sender = ${viewer}) AS mine,
             array_agg(event_id ORDER BY stream_ordering) AS ids,
             (array_agg(event_id ORDER BY CASE WHEN rel_type = 'm.replace' THEN origin_server_ts ELSE stream_ordering END DESC, event_id DESC))[1] AS latest
      FROM (
        SELECT r.relates_to_id AS parent, r.relation_type AS rel_type, r.event_id, r.sender, r.stream_ordering, c.origin_server_ts
        FROM event_relations r
        JOIN events c ON c.event_id = r.event_id
        JOIN events p ON p.event_id = r.relates_to_id
        WHERE r.relates_to_id IN ${parents} AND r.relation_type = ANY(${bundledTypes}::text[])
          AND (r.relation_type <> 'm.replace' OR r.sender = p.sender)
          AND NOT EXISTS (SELECT 1 FROM redactions x WHERE x.redacts = r.event_id)
      ) rel
      GROUP BY parent, rel_type
    ) agg
    LEFT JOIN events e ON e.event_id = agg.latest AND agg.rel_type <> 'm.reference'
    LEFT JOIN event_json j ON j.event_id = e.event_id`
}

/** The aggregates of the relations of `eventIds` (see `aggregatesSelect`), as a statement of its own. */
async function relationAggregates(db: Db, eventIds: readonly string[], viewer: string): Promise<AggregateRow[]> {
  const { rows } = await aggregatesSelect(sql`(SELECT unnest(${eventIds}::text[]))`, viewer).execute(db)
  return rows.map(toAggregate)
}

function toAggregate(row: PageStatementRow): AggregateRow {
  const { parent, rel_type, n, mine, ids } = JSON.parse(row.aggregate!) as { parent: string; rel_type: string; n: number; mine: boolean; ids: string[] }
  return { parent, rel_type, n, mine, ids, ...(row.json !== null && { latest: toRow(row as RawEventRow) }) }
}

/** `unsigned['m.relations']` of `row` from its aggregates. */
function bundledRelations(row: EventRow, aggregates: readonly AggregateRow[], viewer: string, now: number): JsonObject {
  const relations: JsonObject = {}
  for (const a of aggregates) {
    const { latest } = a
    if (a.rel_type === 'm.thread' && latest) {
      relations['m.thread'] = { latest_event: clientEvent(latest.pdu, latest, now), count: a.n, current_user_participated: a.mine || row.sender === viewer }
    } else if (a.rel_type === 'm.replace' && latest) {
      relations['m.replace'] = clientEvent(latest.pdu, latest, now)
    } else if (a.rel_type === 'm.reference') {
      relations['m.reference'] = { chunk: a.ids.map((eventId) => ({ event_id: eventId })) }
    }
  }
  return relations
}

function clientEvent(pdu: JsonObject, row: EventRow, now: number): JsonObject {
  const ts = typeof pdu['origin_server_ts'] === 'number' ? pdu['origin_server_ts'] : 0
  const event: JsonObject = {
    event_id: row.eventId,
    type: row.type,
    content: pdu['content'] ?? {},
    sender: row.sender,
    origin_server_ts: ts,
    room_id: row.roomId,
    unsigned: { age: Math.max(0, now - ts) },
  }
  if (row.stateKey !== null) event['state_key'] = row.stateKey
  const redacts = (pdu['content'] as JsonObject | undefined)?.['redacts'] ?? pdu['redacts']
  if (row.type === 'm.room.redaction' && typeof redacts === 'string') event['redacts'] = redacts
  return event
}

/**
 * State events stripped for `invite_state` (type, state_key, sender, content).
 *
 * @example
 * strippedState(rows) // [{ type: 'm.room.name', state_key: '', sender: '@a:hs', content: { name: 'Lobby' } }]
 */
export function strippedState(rows: readonly EventRow[]): JsonObject[] {
  return rows.map((row) => ({ type: row.type, state_key: row.stateKey ?? '', sender: row.sender, content: row.pdu['content'] ?? {} }))
}

// ---------------------------------------------------------------------------------------------
// Access to a room

/**
 * How a user may read a room: `member` (currently joined), `former` (joined once, now left or
 * banned: reads stop at `until`, their last membership event), `world_readable` (anyone).
 */
export type RoomAccess =
  | { readonly kind: 'member' }
  | { readonly kind: 'former'; readonly until: EventKey }
  | { readonly kind: 'world_readable' }

/**
 * How `userId` may read `roomId`.
 *
 * @throws StorageError `ES_ROOM_NOT_FOUND` for an unknown room, `ES_FORBIDDEN` when the user
 *   never joined it and it is not world readable.
 * @example
 * const access = await roomAccess(db, roomId, '@alice:hs') // { kind: 'member' }
 */
export async function roomAccess(db: Db, roomId: string, userId: string): Promise<RoomAccess> {
  const [room, current, everJoined, visibility] = await Promise.all([
    db.selectFrom('rooms').select('room_id').where('room_id', '=', roomId).executeTakeFirst(),
    db
      .selectFrom('current_state_events as c')
      .innerJoin('events as e', 'e.event_id', 'c.event_id')
      .select(['c.membership', 'e.depth', 'e.stream_ordering'])
      .where('c.room_id', '=', roomId)
      .where('c.type', '=', 'm.room.member')
      .where('c.state_key', '=', userId)
      .executeTakeFirst(),
    db.selectFrom('room_memberships').select('event_id').where('user_id', '=', userId).where('room_id', '=', roomId).where('membership', '=', 'join').limit(1).executeTakeFirst(),
    db
      .selectFrom('current_state_events as c')
      .innerJoin('event_json as j', 'j.event_id', 'c.event_id')
      .select('j.json')
      .where('c.room_id', '=', roomId)
      .where('c.type', '=', 'm.room.history_visibility')
      .where('c.state_key', '=', '')
      .executeTakeFirst(),
  ])
  if (!room) throw new StorageError('ES_ROOM_NOT_FOUND', `Unknown room ${roomId}`)
  if (current?.membership === 'join') return { kind: 'member' }
  const content = visibility ? ((JSON.parse(visibility.json) as JsonObject)['content'] as JsonObject | undefined) : undefined
  if (content?.['history_visibility'] === 'world_readable') return { kind: 'world_readable' }
  if (current && everJoined && (current.membership === 'leave' || current.membership === 'ban')) {
    return { kind: 'former', until: { depth: current.depth, streamOrdering: current.stream_ordering } }
  }
  throw new StorageError('ES_FORBIDDEN', 'You are not allowed to read this room')
}

/** SQL bounds of what `access` lets one read. */
function accessBounds(access: RoomAccess): RawBuilder<SqlBool>[] {
  return access.kind === 'former' ? [rowCoveredBy(tokenAt(access.until))] : []
}

// ---------------------------------------------------------------------------------------------
// Room reads of the client API

/**
 * The room's state as `userId` may see it: current state, or the state at their leave for a
 * former member. Bounded by `upTo` (the reader's tracker token).
 *
 * @example
 * const events = await roomStateForUser(db, roomId, viewer, tracker.currentToken(), Date.now())
 */
export async function roomStateForUser(db: Db, roomId: string, viewer: Viewer, upTo: RoomStreamToken, now: number): Promise<JsonObject[]> {
  const access = await roomAccess(db, roomId, viewer.userId)
  const rows = await stateWhere(db, roomId, [rowCoveredBy(upTo), ...accessBounds(access)])
  return toClientEvents(db, rows, viewer, now)
}

/**
 * The content of one state event as `userId` may see it.
 *
 * @throws StorageError `ES_EVENT_NOT_FOUND` when the room has no such state (for them).
 * @example
 * await stateEventForUser(db, roomId, viewer, 'm.room.name', '', upTo) // { name: 'Lobby' }
 */
export async function stateEventForUser(db: Db, roomId: string, viewer: Viewer, type: string, stateKey: string, upTo: RoomStreamToken): Promise<JsonObject> {
  const access = await roomAccess(db, roomId, viewer.userId)
  const rows = await stateWhere(db, roomId, [rowCoveredBy(upTo), ...accessBounds(access), sql<SqlBool>`s.type = ${type} AND s.state_key = ${stateKey}`])
  const row = rows[0]
  if (!row) throw new StorageError('ES_EVENT_NOT_FOUND', `No ${type} state with key ${JSON.stringify(stateKey)}`)
  const [event] = await toClientEvents(db, [row], viewer, 0)
  return (event?.['content'] as JsonObject | undefined) ?? {}
}

async function visibleEventInRoom(db: Db, roomId: string, eventId: string, userId: string, upTo: RoomStreamToken): Promise<EventRow> {
  const raw = await eventsQuery(db).where('e.event_id', '=', eventId).where('e.room_id', '=', roomId).where(rowCoveredBy(upTo)).executeTakeFirst()
  const row = raw === undefined ? undefined : toRow(raw)
  if (!row || (await filterVisible(db, userId, [row])).length === 0) throw new StorageError('ES_EVENT_NOT_FOUND', `Event ${eventId} not found`)
  return row
}

/**
 * One event of a room, if `viewer` may see it.
 *
 * @throws StorageError `ES_ROOM_NOT_FOUND`, `ES_FORBIDDEN` (room), `ES_EVENT_NOT_FOUND` (not there or not visible).
 * @example
 * await eventForUser(db, roomId, '$abc', viewer, upTo, Date.now()) // { event_id: '$abc', … }
 */
export async function eventForUser(db: Db, roomId: string, eventId: string, viewer: Viewer, upTo: RoomStreamToken, now: number): Promise<JsonObject> {
  await roomAccess(db, roomId, viewer.userId)
  const row = await visibleEventInRoom(db, roomId, eventId, viewer.userId, upTo)
  const [event] = await toClientEvents(db, [row], viewer, now)
  return event!
}

/** Options of `threadsPage`. */
export interface ThreadsQuery {
  readonly roomId: string
  readonly viewer: Viewer
  /** Only threads the viewer started or replied to. */
  readonly participated: boolean
  /** A `next_batch` of an earlier page: threads whose latest reply is older. */
  readonly before?: bigint
  readonly limit: number
  readonly upTo: RoomStreamToken
  readonly now: number
}

/**
 * A page of a room's threads (client-server API `/threads`): their root events, the thread
 * with the latest reply first, each with its `m.thread` aggregation bundled. Roots the viewer
 * may not see are left out. `next_batch`: the position to pass as `before` for the next page.
 *
 * @throws StorageError `ES_ROOM_NOT_FOUND`, `ES_FORBIDDEN` (as `/messages`).
 * @example
 * await threadsPage(db, { roomId, viewer, participated: false, limit: 10, upTo, now: Date.now() }) // { chunk: [root…], next_batch: '412' }
 */
export async function threadsPage(db: Db, q: ThreadsQuery): Promise<{ chunk: JsonObject[]; next_batch?: string }> {
  await roomAccess(db, q.roomId, q.viewer.userId)
  const { rows: roots } = await sql<{ root: string; latest: bigint | string }>`
    SELECT r.relates_to_id AS root, max(r.stream_ordering) AS latest
    FROM event_relations r JOIN events p ON p.event_id = r.relates_to_id
    WHERE r.room_id = ${q.roomId} AND r.relation_type = 'm.thread' AND r.stream_ordering <= ${q.upTo.maxPosition()}::int8
      AND NOT EXISTS (SELECT 1 FROM redactions x WHERE x.redacts = r.event_id)
    GROUP BY r.relates_to_id, p.sender
    HAVING (NOT ${q.participated}::boolean OR p.sender = ${q.viewer.userId} OR bool_or(r.sender = ${q.viewer.userId}))
       AND (${q.before ?? null}::int8 IS NULL OR max(r.stream_ordering) < ${q.before ?? null}::int8)
    ORDER BY latest DESC
    LIMIT ${q.limit + 1}`.execute(db)
  const page = roots.slice(0, q.limit)
  if (page.length === 0) return { chunk: [] }
  const rows = (await eventsQuery(db).where('e.event_id', 'in', page.map((r) => r.root)).execute()).map(toRow)
  const byId = new Map((await filterVisible(db, q.viewer.userId, rows)).map((row) => [row.eventId, row]))
  const ordered = page.flatMap((r) => byId.get(r.root) ?? [])
  const chunk = await toClientEvents(db, ordered, q.viewer, q.now)
  return { chunk, ...(roots.length > q.limit && { next_batch: String(page.at(-1)!.latest) }) }
}

/** Options of `paginateMessages`. */
export interface MessagesQuery {
  readonly roomId: string
  readonly viewer: Viewer
  readonly dir: 'b' | 'f'
  /** Where to start (exclusive in direction `f`, inclusive in `b`); default: the end (`b`) or start (`f`). */
  readonly from?: RoomStreamToken
  /** Where to stop. */
  readonly to?: RoomStreamToken
  readonly limit: number
  readonly filter?: EventFilter
  /** Only the events relating to this event (with this `rel_type`): /relations. */
  readonly relatedTo?: { readonly eventId: string; readonly relType?: string }
  /** The reader's tracker token: nothing beyond it is served. */
  readonly upTo: RoomStreamToken
  readonly now: number
}

/** A page of `/messages`. `end` absent: no more events in that direction. */
export interface MessagesPage {
  readonly start: string
  readonly end?: string
  readonly chunk: JsonObject[]
}

/** Most rows one `/messages` call scans when visibility hides them. */
const maxScannedPages = 5

/** The lowest historic token (before every event). */
const roomStart = RoomStreamToken.historic(0n, -9_223_372_036_854_775_808n)

/**
 * A page of `/messages` (client-server API): events before (`b`) or after (`f`) `from`, newest
 * first for `b`. Historic tokens paginate topologically (`end` = `t<depth>-<stream-1>` of the
 * oldest returned event going back, `t<depth>-<stream>` of the newest going forward); a live
 * token paginates forward in stream order (`end` a live token). Events the viewer may not see
 * are skipped (the page may be shorter than `limit`); a former member's reads stop at their leave.
 *
 * @throws StorageError `ES_ROOM_NOT_FOUND`, `ES_FORBIDDEN`.
 * @example
 * const page = await paginateMessages(db, { roomId, viewer, dir: 'b', from, limit: 10, upTo, now: Date.now() })
 * page.end // 't12-40': pass it as `from` for the next page
 */
export async function paginateMessages(db: Db, q: MessagesQuery): Promise<MessagesPage> {
  const access = await roomAccess(db, q.roomId, q.viewer.userId)
  const filter = q.filter ?? noEventFilter
  const from = q.from ?? (q.dir === 'b' ? q.upTo : roomStart)
  const bounds = [rowCoveredBy(q.upTo), ...accessBounds(access), ...(q.relatedTo ? [relatesTo(q.relatedTo.eventId, q.relatedTo.relType)] : [])]
  const liveForward = q.dir === 'f' && !from.isHistoric
  const chunk: JsonObject[] = []
  let cursor = from
  let end: RoomStreamToken | undefined
  for (let page = 0; page < maxScannedPages && chunk.length === 0; page++) {
    const where = [...bounds, q.dir === 'b' ? rowCoveredBy(cursor) : rowAfter(cursor)]
    if (q.to) where.push(q.dir === 'b' ? rowAfter(q.to) : rowCoveredBy(q.to))
    const order = q.dir === 'b' ? 'topological-desc' : liveForward ? 'stream-asc' : 'topological-asc'
    const read = await readPage(db, { roomId: q.roomId, where, order, limit: q.limit + 1, filter }, q.viewer)
    const more = read.rows.length > q.limit
    const scanned = read.rows.slice(0, q.limit)
    const last = scanned.at(-1)
    if (!last) {
      end = undefined
      break
    }
    cursor = q.dir === 'b' ? tokenBefore(last) : liveForward ? advanceLive(cursor, q.upTo, last.streamOrdering) : tokenAt(last)
    end = more ? cursor : undefined
    const visible = read.visible(filterContainsUrl(scanned, filter))
    chunk.push(...(await read.former(visible))(visible, q.now))
    if (!more) break
  }
  return { start: from.toString(), ...(end !== undefined && { end: end.toString() }), chunk }
}

/**
 * The live token after reading, in stream order from `from`, every event up to stream
 * ordering `through` (bounded by `upTo`): each writer at max(from, min(upTo, through)).
 */
function advanceLive(from: RoomStreamToken, upTo: RoomStreamToken, through: bigint): RoomStreamToken {
  const at = (fromPos: bigint, upToPos: bigint) => {
    const bounded = upToPos < through ? upToPos : through
    return bounded > fromPos ? bounded : fromPos
  }
  const positions = new Map<number, bigint>()
  for (const id of new Set([...from.positions().keys(), ...upTo.positions().keys()])) positions.set(id, at(from.positionOf(id), upTo.positionOf(id)))
  return RoomStreamToken.fromPositions(at(from.stream, upTo.stream), positions)
}

/** `/context/{eventId}` answer. */
export interface EventContext {
  readonly event: JsonObject
  readonly events_before: JsonObject[]
  readonly events_after: JsonObject[]
  readonly start: string
  readonly end: string
  readonly state: JsonObject[]
}

/**
 * The events around `eventId` (up to `limit` in all, split before/after as Synapse), newest
 * first before, oldest first after, with pagination tokens and the state at the last event
 * returned.
 *
 * @throws StorageError `ES_ROOM_NOT_FOUND`, `ES_FORBIDDEN`, `ES_EVENT_NOT_FOUND`.
 * @example
 * const ctx = await eventContext(db, { roomId, eventId, viewer, limit: 10, upTo, now: Date.now() })
 */
export async function eventContext(
  db: Db,
  q: {
    roomId: string
    eventId: string
    viewer: Viewer
    limit: number
    upTo: RoomStreamToken
    now: number
    filter?: EventFilter
    /** Events before and after, instead of `limit` split (search results' `event_context`). */
    split?: { readonly before: number; readonly after: number }
    /** false: `state` is left empty, unread. */
    withState?: boolean
    /**
     * The viewer's access to the room and the event's row, when the caller already checked
     * both (search results: read from rooms the viewer is joined to, filtered by visibility),
     * so that they are not read again per event.
     */
    known?: { readonly access: RoomAccess; readonly row: EventRow }
  },
): Promise<EventContext> {
  const access = q.known?.access ?? (await roomAccess(db, q.roomId, q.viewer.userId))
  const row = q.known?.row ?? (await visibleEventInRoom(db, q.roomId, q.eventId, q.viewer.userId, q.upTo))
  const filter = q.filter ?? noEventFilter
  const bounds = [rowCoveredBy(q.upTo), ...accessBounds(access)]
  const beforeLimit = q.split?.before ?? Math.floor(q.limit / 2)
  const afterLimit = q.split?.after ?? q.limit - beforeLimit
  const [before, after] = await Promise.all([
    queryEvents(db, q.roomId, [...bounds, rowBefore(row)], 'topological-desc', beforeLimit, filter),
    queryEvents(db, q.roomId, [...bounds, rowAfter(tokenAt(row))], 'topological-asc', afterLimit, filter),
  ])
  const [visibleBefore, visibleAfter] = await Promise.all([
    filterVisible(db, q.viewer.userId, filterContainsUrl(before, filter)),
    filterVisible(db, q.viewer.userId, filterContainsUrl(after, filter)),
  ])
  const oldest = before.at(-1) ?? row
  const newest = after.at(-1) ?? row
  const state = q.withState === false ? [] : await stateAt(db, q.roomId, newest)
  const [event, eventsBefore, eventsAfter, stateEvents] = await Promise.all([
    toClientEvents(db, [row], q.viewer, q.now),
    toClientEvents(db, visibleBefore, q.viewer, q.now),
    toClientEvents(db, visibleAfter, q.viewer, q.now),
    toClientEvents(db, state, q.viewer, q.now),
  ])
  return { event: event[0]!, events_before: eventsBefore, events_after: eventsAfter, start: tokenBefore(oldest).toString(), end: tokenAt(newest).toString(), state: stateEvents }
}

/** Events compared on either side of where the bisection of `eventAtTimestamp` lands. */
export const timestampWindow = 50

/**
 * `GET /v1/rooms/{roomId}/timestamp_to_event`: the event closest to `ts` in direction `dir`
 * (`f`: the earliest at or after it; `b`: the latest at or before it) among those `viewer` may
 * see, or undefined.
 *
 * Found without an index on `origin_server_ts`, which would cost every persist one more index
 * entry: a bisection over the room's stream order (index seeks on `(room_id, stream_ordering)`,
 * one per halving of the room's span of stream IDs, 64 at most), then the `timestampWindow`
 * events on either side of where it lands compared by timestamp. Exact when timestamps follow
 * stream order, as they do for the events of one writer (its clock stamps them as it persists);
 * writers whose clocks disagree by more than the window's events can move the answer by a few
 * events. Ties go to the earliest event (`f`) or the latest (`b`) in stream order.
 *
 * @throws StorageError `ES_ROOM_NOT_FOUND`, `ES_FORBIDDEN`.
 * @example
 * await eventAtTimestamp(db, { roomId, viewer, ts: Date.parse('2026-11-01'), dir: 'f', upTo }) // { event_id: '$…', origin_server_ts: 1793491200123 }
 */
export async function eventAtTimestamp(
  db: Db,
  q: { roomId: string; viewer: Viewer; ts: number; dir: 'f' | 'b'; upTo: RoomStreamToken },
): Promise<{ event_id: string; origin_server_ts: number } | undefined> {
  const access = await roomAccess(db, q.roomId, q.viewer.userId)
  const bounds = [rowCoveredBy(q.upTo), ...accessBounds(access)]
  const inRoom = () => {
    let query = db
      .selectFrom('events as e')
      .leftJoin('instances as i', 'i.instance_name', 'e.instance_name')
      .select(['e.stream_ordering', 'e.origin_server_ts'])
      .where('e.room_id', '=', q.roomId)
      .where('e.outlier', '=', false)
    for (const bound of bounds) query = query.where(bound)
    return query
  }
  /** The first event at or after stream ordering `from`. */
  const seek = (from: bigint) => inRoom().where('e.stream_ordering', '>=', from).orderBy('e.stream_ordering').limit(1).executeTakeFirst()
  const [first, last] = await Promise.all([inRoom().orderBy('e.stream_ordering').limit(1).executeTakeFirst(), inRoom().orderBy('e.stream_ordering', 'desc').limit(1).executeTakeFirst()])
  if (first === undefined || last === undefined) return undefined
  const target = BigInt(Math.trunc(q.ts))
  // The first event (in stream order) stamped at or after `ts`, timestamps taken as ascending:
  // every event before `lo` is earlier than ts; the event at `hi` (or the end) is not.
  let lo = BigInt(first.stream_ordering)
  let hi = BigInt(last.stream_ordering) + 1n
  while (lo < hi) {
    const mid = lo + (hi - lo) / 2n
    const found = await seek(mid)
    const at = found === undefined ? undefined : BigInt(found.stream_ordering)
    if (at === undefined || at >= hi) hi = mid
    else if (BigInt(found!.origin_server_ts) >= target) hi = at
    else lo = at + 1n
  }
  const [before, after] = await Promise.all([
    queryEvents(db, q.roomId, [...bounds, sql<SqlBool>`e.stream_ordering < ${lo}::int8`], 'stream-desc', timestampWindow),
    queryEvents(db, q.roomId, [...bounds, sql<SqlBool>`e.stream_ordering >= ${lo}::int8`], 'stream-asc', timestampWindow),
  ])
  const ts = (row: EventRow) => BigInt(row.pdu['origin_server_ts'] as number)
  const candidates = [...before, ...after]
    .filter((row) => (q.dir === 'f' ? ts(row) >= target : ts(row) <= target))
    .sort((a, b) => {
      const byTs = q.dir === 'f' ? compareBigints(ts(a), ts(b)) : compareBigints(ts(b), ts(a))
      return byTs !== 0 ? byTs : q.dir === 'f' ? compareBigints(a.streamOrdering, b.streamOrdering) : compareBigints(b.streamOrdering, a.streamOrdering)
    })
  const visible = await filterVisible(db, q.viewer.userId, candidates)
  const best = visible[0]
  return best === undefined ? undefined : { event_id: best.eventId, origin_server_ts: Number(ts(best)) }
}

/**
 * The member events of a room as `viewer` may see them: at `at` (a token; default now, and at
 * most the viewer's leave for a former member), with `membership` = only that membership,
 * `notMembership` = all but that one.
 *
 * @throws StorageError `ES_ROOM_NOT_FOUND`, `ES_FORBIDDEN`.
 * @example
 * await roomMembers(db, roomId, viewer, { upTo, membership: 'join', now: Date.now() })
 */
export async function roomMembers(
  db: Db,
  roomId: string,
  viewer: Viewer,
  q: { at?: RoomStreamToken; membership?: string; notMembership?: string; upTo: RoomStreamToken; now: number },
): Promise<JsonObject[]> {
  const access = await roomAccess(db, roomId, viewer.userId)
  const where = [rowCoveredBy(q.upTo), ...accessBounds(access), ...(q.at ? [rowCoveredBy(q.at)] : [])]
  let query = db
    .selectFrom('room_memberships as m')
    .innerJoin('events as e', 'e.event_id', 'm.event_id')
    .leftJoin('instances as i', 'i.instance_name', 'e.instance_name')
    .distinctOn('m.user_id')
    .select(['m.event_id', 'm.membership'])
    .where('m.room_id', '=', roomId)
    .where('e.outlier', '=', false)
  for (const condition of where) query = query.where(condition)
  const latest = await query.orderBy('m.user_id').orderBy('e.depth', 'desc').orderBy('e.stream_ordering', 'desc').execute()
  const wanted = latest.filter((m) => (q.membership === undefined || m.membership === q.membership) && (q.notMembership === undefined || m.membership !== q.notMembership))
  if (wanted.length === 0) return []
  const rows = (await eventsQuery(db).where('e.event_id', 'in', wanted.map((m) => m.event_id)).orderBy('e.stream_ordering').execute()).map(toRow)
  return toClientEvents(db, rows, viewer, q.now)
}

/**
 * The joined members of a room with their display names and avatars (from their member event).
 *
 * @throws StorageError `ES_ROOM_NOT_FOUND`, `ES_FORBIDDEN` (the viewer must be joined, or the room world readable).
 * @example
 * await joinedMembers(db, roomId, '@alice:hs') // { '@alice:hs': { display_name: 'Alice', avatar_url: null } }
 */
export async function joinedMembers(db: Db, roomId: string, userId: string): Promise<Record<string, { display_name: string | null; avatar_url: string | null }>> {
  const access = await roomAccess(db, roomId, userId)
  if (access.kind === 'former') throw new StorageError('ES_FORBIDDEN', 'You are not in this room')
  const joined: Record<string, { display_name: string | null; avatar_url: string | null }> = {}
  for (const [member, profile] of await memberProfiles(db, roomId, { joinedOnly: true })) {
    joined[member] = { display_name: profile.displayname ?? null, avatar_url: profile.avatar_url ?? null }
  }
  return joined
}

/**
 * Display names and avatars of a room's members from their current member events: the joined
 * ones (`joinedOnly`), or `users` whatever their membership; in user ID order.
 *
 * @example
 * await memberProfiles(db, roomId, { users: ['@alice:hs'] }) // Map { '@alice:hs' => { displayname: 'Alice' } }
 */
export async function memberProfiles(
  db: Db,
  roomId: string,
  which: { readonly joinedOnly: true } | { readonly users: readonly string[] },
): Promise<Map<string, { displayname?: string; avatar_url?: string }>> {
  if ('users' in which && which.users.length === 0) return new Map()
  let query = db
    .selectFrom('current_state_events as c')
    .innerJoin('event_json as j', 'j.event_id', 'c.event_id')
    .select(['c.state_key', 'j.json'])
    .where('c.room_id', '=', roomId)
    .where('c.type', '=', 'm.room.member')
  query = 'users' in which ? query.where('c.state_key', 'in', [...which.users]) : query.where('c.membership', '=', 'join')
  const profiles = new Map<string, { displayname?: string; avatar_url?: string }>()
  for (const row of await query.orderBy('c.state_key').execute()) {
    const content = ((JSON.parse(row.json) as JsonObject)['content'] ?? {}) as JsonObject
    profiles.set(row.state_key, {
      ...(typeof content['displayname'] === 'string' && { displayname: content['displayname'] }),
      ...(typeof content['avatar_url'] === 'string' && { avatar_url: content['avatar_url'] }),
    })
  }
  return profiles
}

/**
 * The rooms `userId` is joined to (current state).
 *
 * @example
 * await joinedRooms(db, '@alice:hs') // ['!a:hs', '!b:hs']
 */
export async function joinedRooms(db: Db, userId: string): Promise<string[]> {
  const rows = await db
    .selectFrom('current_state_events')
    .select('room_id')
    .where('type', '=', 'm.room.member')
    .where('state_key', '=', userId)
    .where('membership', '=', 'join')
    .orderBy('room_id')
    .execute()
  return rows.map((row) => row.room_id)
}
