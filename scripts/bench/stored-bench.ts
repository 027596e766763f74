/**
 * Issue 4 benchmark, scaling: the persister's per-event cost with 10,000 events already stored
 * (the baseline) next to `ctx.stored` (`--stored`, default 1,000,000) stored.
 *
 * Two fresh databases, each with 1,000 rooms created through the persister, then preloaded with
 * raw server-side `INSERT … SELECT generate_series` of realistic message rows (events,
 * event_json with a signed-PDU-shaped JSON, event_edges chaining each room, replication_requests)
 * spread over those rooms, not through the persister; then ANALYZE and a CHECKPOINT. Both
 * persisters are then driven alternately as in persister-bench.ts (32 concurrent callers, 10
 * events per request, rooms in turn). Per-event cost = 1 / events/s (at that concurrency).
 * ratio = cost with `stored` events ÷ cost with 10,000 (goal ≤ 1.2).
 */
import type pg from 'pg'
import { benchDatabases, rawPool, type BenchDatabase } from './bench-db.js'
import type { BenchContext, BenchResult } from './context.js'
import { createRooms, drivePersister, serverName, startBenchPersister, type BenchPersister } from './persister-driver.js'
import { ratio, round, spread, type Spread } from './stats.js'

export interface StoredEventsResult extends BenchResult {
  readonly benchmark: 'persister.stored'
  readonly rooms: number
  readonly batch: number
  readonly concurrentRequests: number
  readonly durationMs: number
  readonly repeats: number
  readonly stored: number
  readonly baselineStored: number
  readonly preloadSeconds: number
  readonly eventsPerS: Spread
  readonly microsPerEvent: Spread
  readonly baselineEventsPerS: Spread
  readonly baselineMicrosPerEvent: Spread
  readonly ratioMeaning: string
}

const concurrency = 32
const batch = 10
const chunk = 50_000

interface Side {
  readonly stored: number
  readonly db: BenchDatabase
  readonly bench: BenchPersister
  readonly rooms: string[]
  readonly eventsPerS: number[]
  preloadSeconds: number
}

export async function run(ctx: BenchContext): Promise<BenchResult[]> {
  const baselineStored = ctx.quick ? 1000 : 10_000
  const roomCount = ctx.quick ? 20 : 1000
  const durationMs = ctx.quick ? 500 : 3000
  const dbs = benchDatabases(ctx.adminUrl)
  const sides: Side[] = []
  try {
    for (const stored of [baselineStored, ctx.stored]) {
      const db = await dbs.fresh(`stored_${stored}`, { poolSize: 2 })
      const bench = await startBenchPersister(db.url, ctx.redisUrl)
      const side: Side = { stored, db, bench, rooms: [], eventsPerS: [], preloadSeconds: 0 }
      sides.push(side)
      ctx.progress(`persister.stored ${stored}: creating ${roomCount} rooms`)
      side.rooms.push(...(await createRooms(bench.persister, roomCount, concurrency)))
      const pool = rawPool(db.url, 1)
      try {
        const started = performance.now()
        await preload(pool, side.rooms, stored, (done) => ctx.progress(`persister.stored ${stored}: preloaded ${done.toLocaleString('en')} events`))
        side.preloadSeconds = round((performance.now() - started) / 1000, 1)
        await pool.query('ANALYZE')
      } finally {
        await pool.end()
      }
    }
    await sides[0]!.db.pool.query('CHECKPOINT')
    for (const side of sides) {
      if (!ctx.quick) await drivePersister(side.bench.persister, side.rooms, batch, concurrency, 500)
    }
    for (let i = 0; i < ctx.repeats; i++) {
      ctx.progress(`persister.stored ${baselineStored} vs ${ctx.stored}: repeat ${i + 1}/${ctx.repeats}`)
      for (const side of i % 2 === 0 ? sides : [...sides].reverse()) {
        const outcome = await drivePersister(side.bench.persister, side.rooms, batch, concurrency, durationMs)
        side.eventsPerS.push((outcome.units * 1000) / outcome.elapsedMs)
      }
    }
    const [base, many] = sides as [Side, Side]
    const micros = (side: Side) => spread(side.eventsPerS.map((perS) => 1e6 / perS), 1)
    const microsPerEvent = micros(many)
    const baselineMicrosPerEvent = micros(base)
    const result: StoredEventsResult = {
      benchmark: 'persister.stored',
      rooms: roomCount,
      batch,
      concurrentRequests: concurrency,
      durationMs,
      repeats: ctx.repeats,
      stored: ctx.stored,
      baselineStored,
      preloadSeconds: many.preloadSeconds,
      eventsPerS: spread(many.eventsPerS, 0),
      microsPerEvent,
      baselineEventsPerS: spread(base.eventsPerS, 0),
      baselineMicrosPerEvent,
      ratio: ratio(microsPerEvent.median, baselineMicrosPerEvent.median),
      ratioMeaning: `persister µs/event with ${ctx.stored} events stored ÷ with ${baselineStored} stored (lower is better; goal ≤ 1.2)`,
    }
    return [result]
  } finally {
    for (const side of sides) {
      await side.bench.close()
      await side.db.drop()
    }
    await dbs.close()
  }
}

/**
 * Inserts `count` message events spread over `rooms` with server-side `INSERT … SELECT`, in
 * chunks of 50,000 (one statement and commit each): events, event_json, event_edges (each event
 * follows the previous preloaded event of its room) and replication_requests. Stream orderings
 * are reserved from the events sequence first. Preloads into one database need distinct `salt`s
 * (their event IDs are derived from it and the event's number).
 */
export async function preload(pool: pg.Pool, rooms: readonly string[], count: number, onProgress: (done: number) => void, salt = ''): Promise<void> {
  if (!/^[a-z0-9]*$/.test(salt)) throw new RangeError('salt: lowercase letters and digits only')
  const { rows } = await pool.query<{ start: string }>(
    `SELECT setval('events_stream_seq', nextval('events_stream_seq') + $1::bigint) - $1::bigint AS start`,
    [count],
  )
  const start = rows[0]!.start
  const ts = Date.now() - 86_400_000
  const eventId = (g: string) => `'$' || md5('pre${salt}' || ${g}) || substr(md5('id${salt}' || ${g}), 1, 11)`
  for (let from = 1; from <= count; from += chunk) {
    const to = Math.min(count, from + chunk - 1)
    await pool.query(
      `WITH s AS (
         SELECT g, ${eventId('g')} AS id, ${eventId(`(g - $3)`)} AS prev, ($2::text[])[1 + g % $3] AS room,
                '@user' || (g % 8) || ':${serverName}' AS sender, 20 + g / $3 AS depth
         FROM generate_series($4::bigint, $5::bigint) g),
       e AS (
         INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender, origin_server_ts, received_ts, depth, instance_name, redacts, membership)
         SELECT $1::bigint + g, id, room, 'm.room.message', NULL, sender, $6::bigint + g, $6::bigint + g, depth, 'preload', NULL, NULL FROM s),
       j AS (
         INSERT INTO event_json (event_id, room_id, json)
         SELECT id, room, json_build_object(
           'auth_events', json_build_array(${eventId('-1')}, ${eventId('-2')}, ${eventId('-3')}),
           'content', json_build_object('body', 'benchmark message ' || g || ': the quick brown fox jumps over the lazy dog', 'msgtype', 'm.text'),
           'depth', depth,
           'hashes', json_build_object('sha256', substr(md5('h' || g) || md5('i' || g), 1, 43)),
           'origin_server_ts', $6::bigint + g,
           'prev_events', json_build_array(prev),
           'room_id', room,
           'sender', sender,
           'signatures', json_build_object('${serverName}', json_build_object('ed25519:bench', substr(md5('s' || g) || md5('t' || g) || md5('u' || g), 1, 86))),
           'type', 'm.room.message')::text
         FROM s),
       x AS (
         INSERT INTO event_edges (event_id, prev_event_id, room_id) SELECT id, prev, room FROM s)
       INSERT INTO replication_requests (request_id, first_idx, event_ids, inserted_ts)
       SELECT 'preload-${salt}' || g, 0, ARRAY[id], $6::bigint + g FROM s`,
      [start, rooms, rooms.length, from, to, ts],
    )
    onProgress(to)
  }
}
