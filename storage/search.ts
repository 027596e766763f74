import { sql, type Kysely, type RawBuilder, type SqlBool } from 'kysely'
import { StorageError } from './errors.js'
import type { JsonObject } from './events/redaction.js'
import {
  eventContext,
  filterContainsUrl,
  filterVisible,
  joinedRooms,
  memberProfiles,
  roomAccess,
  rowMatches,
  toClientEvents,
  toRow,
  type EventFilter,
  type EventRow,
  type RawEventRow,
  type RoomAccess,
  type Viewer,
} from './room-reads.js'
import type { Database } from './schema.js'
import type { RoomStreamToken } from './streams/room-stream-token.js'
import type { MultiWriterStream } from './streams/stream-sequence.js'

/**
 * Server-side search (client-server API "Server Side Search"): the `room_events` category over
 * PostgreSQL full text search.
 *
 * - **The index** (`event_search`, migration 0017) holds one vector per message body, room name
 *   and room topic. It is filled behind the events stream (`indexForSearch`, run by
 *   api/search-indexer.ts), not by the persisters, so a send pays nothing for it; an event is
 *   searchable a moment after its send. History imported into rooms' past (the backfill
 *   stream, negative stream orderings) is indexed the same way, behind that stream.
 * - **Queries** read like web search (as Synapse's): words are all required, `"quoted words"`
 *   must follow each other, `-word` excludes, `or` between two terms takes either. A word
 *   matches every word it begins ("hel" finds "hello"), after English stemming (Synapse's
 *   configuration too).
 * - **What a user finds**: events of the rooms they are joined to now, that their history
 *   visibility lets them see, not redacted; ordered by rank (`ts_rank_cd`) or by recency.
 */

/** The fields indexed, by event type, and the `keys` a search may ask for. */
export const searchKeys = ['content.body', 'content.name', 'content.topic'] as const
export type SearchKey = (typeof searchKeys)[number]

/** Text search configuration (Synapse's). */
const textConfig = 'english'

/**
 * How the index reads each stream: the position's column, and the stream's IDs `(after, upTo]`
 * as stream orderings (ascending for `events`; negative and descending for `backfill`, whose
 * stream ordering is -ID), in conditions the primary key's index serves.
 */
const streamReads: Record<MultiWriterStream, {
  readonly position: 'stream_ordering' | 'backfill_id'
  readonly inRange: (after: RawBuilder<unknown>, upTo: RawBuilder<unknown>) => RawBuilder<SqlBool>
}> = {
  events: {
    position: 'stream_ordering',
    inRange: (after, upTo) => sql<SqlBool>`e.stream_ordering > ${after} AND e.stream_ordering <= ${upTo}`,
  },
  backfill: {
    position: 'backfill_id',
    inRange: (after, upTo) => sql<SqlBool>`e.stream_ordering < -${after} AND e.stream_ordering >= -${upTo}`,
  },
}

/**
 * Indexes the events of `stream` after the stored position, up to `upTo` and at most `limit`
 * stream IDs further (so at most `limit` events, indexed or not), drops the entries of the events
 * redacted by redactions among them, and stores the new position, in ONE statement: a crash
 * never leaves an event indexed without the position moving past it, and an event indexed twice
 * is impossible (its ID is the key). `events` is the live stream; `backfill` is history imported
 * into rooms' past (positions are backfill stream IDs, stream ordering = -ID).
 *
 * @returns where it started, where it got to, and the entries written and dropped.
 * @example
 * const { reached } = await indexForSearch(db, tracker.linearPosition(), 1000)
 * await indexForSearch(db, backfillTracker.linearPosition(), 1000, 'backfill')
 */
export async function indexForSearch(
  db: Kysely<Database>,
  upTo: bigint,
  limit: number,
  stream: MultiWriterStream = 'events',
): Promise<{ from: bigint; reached: bigint; indexed: number; removed: number }> {
  const read = streamReads[stream]
  const after = sql`(SELECT after FROM pos)`
  // A batch is a range of stream IDs, not a LIMIT over the events: the planner cannot know how
  // far behind the stored position is, and while the events table looked small it planned an
  // ordered LIMIT over (after, upTo] as a scan of the whole range and a sort, every batch.
  const { rows } = await sql<{ from: string; reached: string; indexed: string; removed: string }>`
    WITH pos AS (SELECT ${sql.ref(read.position)} AS after FROM event_search_position FOR UPDATE),
    reach AS (SELECT GREATEST(after, LEAST(${upTo}::int8, after + ${limit}::int8)) AS reached FROM pos),
    picked AS (
      SELECT e.event_id, e.room_id, e.stream_ordering, e.sender, e.type, (j.json::json) -> 'content' AS content
      FROM events e JOIN event_json j ON j.event_id = e.event_id
      WHERE ${read.inRange(after, sql`(SELECT reached FROM reach)`)} AND NOT e.outlier
        AND e.type IN ('m.room.message', 'm.room.name', 'm.room.topic', 'm.room.redaction')
    ),
    texts AS (
      SELECT p.event_id, p.room_id, p.stream_ordering, p.sender, p.type, k.key, p.content ->> k.field AS text
      FROM picked p
      JOIN (VALUES ('m.room.message', 'body', 'content.body'), ('m.room.name', 'name', 'content.name'), ('m.room.topic', 'topic', 'content.topic')) AS k(type, field, key)
        ON k.type = p.type
      WHERE json_typeof(p.content -> k.field) = 'string' AND p.content ->> k.field <> ''
        AND NOT EXISTS (SELECT 1 FROM redactions r WHERE r.redacts = p.event_id)
    ),
    inserted AS (
      INSERT INTO event_search (event_id, room_id, stream_ordering, sender, type, key, vector)
      SELECT event_id, room_id, stream_ordering, sender, type, key, to_tsvector(${textConfig}::regconfig, text) FROM texts
      ON CONFLICT (event_id) DO NOTHING
      RETURNING 1
    ),
    removed AS (
      DELETE FROM event_search s USING picked p, redactions r
      WHERE p.type = 'm.room.redaction' AND r.event_id = p.event_id AND s.event_id = r.redacts
      RETURNING 1
    ),
    moved AS (
      UPDATE event_search_position SET ${sql.ref(read.position)} = (SELECT reached FROM reach)
      WHERE (SELECT reached FROM reach) <> (SELECT after FROM pos) RETURNING 1
    )
    SELECT (SELECT after FROM pos)::text AS from, (SELECT reached FROM reach)::text AS reached,
      (SELECT count(*) FROM inserted)::text AS indexed, (SELECT count(*) FROM removed)::text AS removed, (SELECT count(*) FROM moved) AS moved`.execute(db)
  const row = rows[0]!
  return { from: BigInt(row.from), reached: BigInt(row.reached), indexed: Number(row.indexed), removed: Number(row.removed) }
}

/** How far the index has read `stream` (for `backfill`, a backfill stream ID). */
export async function searchIndexPosition(db: Kysely<Database>, stream: MultiWriterStream = 'events'): Promise<bigint> {
  const row = await db
    .selectFrom('event_search_position')
    .select(sql<string>`${sql.ref(streamReads[stream].position)}::text`.as('position'))
    .executeTakeFirstOrThrow()
  return BigInt(row.position)
}

// ---------------------------------------------------------------------------------------------
// Queries

/** A search term as a PostgreSQL `to_tsquery` text, and the words a client may highlight. */
export interface ParsedTerm {
  /** Empty when the term has nothing to search for. */
  readonly tsquery: string
  readonly highlights: readonly string[]
}

/**
 * Reads a search term web-search style: words (each matched as a prefix), `"phrases"`, `-word`
 * or `-"phrase"` to exclude, `or` between terms. Every term becomes a quoted lexeme of
 * `to_tsquery`, so no input is a syntax error; PostgreSQL's parser and stemmer then split and
 * normalize its text as they do the index's.
 *
 * @example
 * parseSearchTerm('hello "big world" -spam') // { tsquery: "'hello':* & 'big world' & !'spam':*", highlights: ['hello', 'big', 'world'] }
 */
export function parseSearchTerm(term: string): ParsedTerm {
  const clauses: string[] = []
  const highlights = new Set<string>()
  let pendingOr = false
  for (const match of term.matchAll(/(-?)"([^"]*)"?|(\S+)/g)) {
    const [, negated, phrase, word] = match
    if (word !== undefined && /^or$/i.test(word)) {
      pendingOr = clauses.length > 0
      continue
    }
    let text: string
    let not = false
    let prefix = false
    if (phrase !== undefined) {
      text = phrase
      not = negated === '-'
    } else {
      not = word!.startsWith('-') && word!.length > 1
      text = not ? word!.slice(1) : word!
      prefix = true
    }
    // Only what the text parser would see as words: punctuation alone searches for nothing.
    const words = text.split(/[^\p{L}\p{N}_]+/u).filter((w) => w !== '')
    if (words.length === 0) continue
    if (!not) for (const w of words) highlights.add(w.toLowerCase())
    const lexeme = `'${words.join(' ').replace(/\\/g, '\\\\').replace(/'/g, "''")}'${prefix ? ':*' : ''}`
    const clause = not ? `!${lexeme}` : lexeme
    if (pendingOr) clauses.push(`${clauses.pop()!} | ${clause}`)
    else clauses.push(clause)
    pendingOr = false
  }
  return { tsquery: clauses.map((c) => (c.includes(' | ') ? `(${c})` : c)).join(' & '), highlights: [...highlights] }
}

/** Where a page of results goes on from (`next_batch`). */
export type SearchCursor = { readonly order: 'recent'; readonly streamOrdering: bigint } | { readonly order: 'rank'; readonly rank: number; readonly streamOrdering: bigint }

/** A cursor as `next_batch`. */
export function formatSearchCursor(cursor: SearchCursor): string {
  return cursor.order === 'recent' ? `r.${cursor.streamOrdering}` : `k.${cursor.rank}.${cursor.streamOrdering}`
}

/**
 * A `next_batch` as a cursor.
 *
 * @throws StorageError `ES_INVALID_TOKEN` when it is not one of ours.
 */
export function parseSearchCursor(text: string): SearchCursor {
  const recent = /^r\.(-?[0-9]{1,19})$/.exec(text)
  if (recent) return { order: 'recent', streamOrdering: BigInt(recent[1]!) }
  const rank = /^k\.([0-9][0-9.eE+-]{0,30})\.(-?[0-9]{1,19})$/.exec(text)
  if (rank && Number.isFinite(Number(rank[1]))) return { order: 'rank', rank: Number(rank[1]), streamOrdering: BigInt(rank[2]!) }
  throw new StorageError('ES_INVALID_TOKEN', 'Invalid next_batch')
}

export interface SearchQuery {
  readonly viewer: Viewer
  readonly term: string
  readonly keys: readonly SearchKey[]
  /** The filter's rooms (absent: every joined room) and not_rooms. */
  readonly rooms?: readonly string[]
  readonly notRooms: readonly string[]
  readonly filter: EventFilter
  readonly orderBy: 'rank' | 'recent'
  readonly limit: number
  readonly next?: SearchCursor
  /** `event_context`: events around each result, and their senders' profiles. */
  readonly context?: { readonly before: number; readonly after: number; readonly includeProfile: boolean }
  readonly upTo: RoomStreamToken
  readonly now: number
}

export interface SearchResult {
  readonly rank: number
  readonly result: JsonObject
  readonly context?: JsonObject
}

export interface RoomEventsAnswer {
  readonly count: number
  readonly highlights: readonly string[]
  readonly results: readonly SearchResult[]
  readonly next_batch?: string
}

/** Database pages read to fill one page of visible results at most. */
const maxRounds = 3

/**
 * One page of `room_events` results.
 *
 * `count` is the number of matching entries in the searched rooms (before history visibility,
 * as Synapse's). A page may hold fewer than `limit` results (some not visible to the user) and
 * still have a `next_batch`.
 *
 * @throws StorageError `ES_INVALID_TOKEN` for a cursor of the other order.
 * @example
 * const page = await searchRoomEvents(db, { viewer, term: 'lunch', keys: ['content.body'], notRooms: [], filter: noEventFilter, orderBy: 'recent', limit: 10, upTo, now: Date.now() })
 */
export async function searchRoomEvents(db: Kysely<Database>, q: SearchQuery): Promise<RoomEventsAnswer> {
  if (q.next !== undefined && q.next.order !== q.orderBy) throw new StorageError('ES_INVALID_TOKEN', `next_batch belongs to a search ordered by ${q.next.order}`)
  const parsed = parseSearchTerm(q.term)
  const wanted = q.rooms === undefined ? undefined : new Set(q.rooms)
  const rooms = (await joinedRooms(db, q.viewer.userId)).filter((r) => (wanted === undefined || wanted.has(r)) && !q.notRooms.includes(r))
  if (parsed.tsquery === '' || rooms.length === 0 || q.keys.length === 0) return { count: 0, highlights: parsed.highlights, results: [] }

  const matches = sql<SqlBool>`s.vector @@ q.query AND s.room_id = ANY(${rooms}::text[]) AND s.key = ANY(${[...q.keys]}::text[]) AND ${rowMatches(q.filter)}
    AND NOT EXISTS (SELECT 1 FROM redactions r WHERE r.redacts = s.event_id)`
  const from = sql`event_search s CROSS JOIN (SELECT to_tsquery(${textConfig}::regconfig, ${parsed.tsquery}) AS query) q JOIN events e ON e.event_id = s.event_id`
  const countQuery = sql<{ n: string }>`SELECT count(*)::text AS n FROM ${from} WHERE ${matches}`.execute(db)

  const found: { raw: RawEventRow; rank: number }[] = []
  let cursor = q.next
  let more = false
  for (let round = 0; round < maxRounds && found.length < q.limit; round++) {
    const after: RawBuilder<SqlBool> =
      cursor === undefined
        ? sql<SqlBool>`true`
        : cursor.order === 'recent'
          ? sql<SqlBool>`e.stream_ordering < ${cursor.streamOrdering}::int8`
          : sql<SqlBool>`(ts_rank_cd(s.vector, q.query), e.stream_ordering) < (${String(cursor.rank)}::real, ${cursor.streamOrdering}::int8)`
    const order = q.orderBy === 'rank' ? sql`rank DESC, e.stream_ordering DESC` : sql`e.stream_ordering DESC`
    const pageSize = q.limit - found.length
    const { rows } = await sql<RawEventRow & { rank: number }>`
      SELECT e.event_id, e.room_id, e.type, e.state_key, e.sender, e.depth, e.stream_ordering, j.json, ts_rank_cd(s.vector, q.query) AS rank
      FROM ${from} JOIN event_json j ON j.event_id = s.event_id
      WHERE ${matches} AND NOT e.outlier AND ${after}
      ORDER BY ${order}
      LIMIT ${pageSize}::int`.execute(db)
    const last = rows.at(-1)
    if (last !== undefined) cursor = q.orderBy === 'rank' ? { order: 'rank', rank: last.rank, streamOrdering: BigInt(last.stream_ordering) } : { order: 'recent', streamOrdering: BigInt(last.stream_ordering) }
    more = rows.length === pageSize
    const visible = new Set((await filterVisible(db, q.viewer.userId, filterContainsUrl(rows.map(toRow), q.filter))).map((r) => r.eventId))
    for (const raw of rows) if (visible.has(raw.event_id)) found.push({ raw, rank: raw.rank })
    if (!more) break
  }

  const rows = found.map((f) => toRow(f.raw))
  const [events, contexts, counted] = await Promise.all([
    toClientEvents(db, rows, q.viewer, q.now),
    q.context === undefined ? undefined : resultContexts(db, rows, q, q.context),
    countQuery,
  ])
  return {
    count: Number(counted.rows[0]?.n ?? 0),
    highlights: parsed.highlights,
    results: found.map((f, i) => ({ rank: f.rank, result: events[i]!, ...(contexts !== undefined && { context: contexts[i]! }) })),
    ...(more && cursor !== undefined && { next_batch: formatSearchCursor(cursor) }),
  }
}

/**
 * The results' `context`s. The results are visible events of rooms the viewer is joined to, so
 * the viewer's access is read once per room, and no result is looked up again.
 */
async function resultContexts(db: Kysely<Database>, rows: readonly EventRow[], q: SearchQuery, ctx: NonNullable<SearchQuery['context']>): Promise<JsonObject[]> {
  const access = new Map<string, Promise<RoomAccess>>()
  const accessTo = (roomId: string) => {
    let known = access.get(roomId)
    if (known === undefined) access.set(roomId, (known = roomAccess(db, roomId, q.viewer.userId)))
    return known
  }
  return Promise.all(rows.map(async (row) => resultContext(db, row, await accessTo(row.roomId), q, ctx)))
}

/** A result's `context`: the events around it, and the profiles of the senders of all of them (from the room's current member events). */
async function resultContext(db: Kysely<Database>, row: EventRow, access: RoomAccess, q: SearchQuery, ctx: NonNullable<SearchQuery['context']>): Promise<JsonObject> {
  const roomId = row.roomId
  const around = await eventContext(db, {
    roomId,
    eventId: row.eventId,
    viewer: q.viewer,
    limit: 0,
    split: { before: ctx.before, after: ctx.after },
    withState: false,
    upTo: q.upTo,
    now: q.now,
    known: { access, row },
  })
  const context: JsonObject = { events_before: around.events_before, events_after: around.events_after, start: around.start, end: around.end }
  if (!ctx.includeProfile) return context
  const senders = [...new Set([around.event, ...around.events_before, ...around.events_after].map((e) => e['sender']).filter((s): s is string => typeof s === 'string'))]
  return { ...context, profile_info: Object.fromEntries(await memberProfiles(db, roomId, { users: senders })) }
}
