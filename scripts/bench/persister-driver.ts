/**
 * Drives the persister core through the library (no HTTP), and the raw-SQL baseline writing the
 * same rows, for the persister benchmarks (persister-bench.ts, stored-bench.ts).
 */
import { randomBytes } from 'node:crypto'
import type pg from 'pg'
import { Registry } from 'prom-client'
import { planRoomCreation } from '../../api/room-creation.js'
import type { NewEvent } from '../../persisters/new-event.js'
import { createPersister, type Persister } from '../../persisters/persister.js'
import { createShardMap } from '../../persisters/shard-map.js'
import { createBus, type Bus } from '../../storage/bus/bus.js'
import { createDatabase, type DatabaseHandle } from '../../storage/database.js'
import { generateSigningKey } from '../../storage/events/signing.js'
import { silentLogger } from '../../storage/logger.js'
import { createIdGenerator } from '../../storage/streams/id-generator.js'
import { closedLoop, type LoopOutcome } from './closed-loop.js'

export const serverName = 'bench.test'
export const creator = `@creator:${serverName}`
/** Senders of benchmark messages (all joined through the public join rule). */
const senders = Array.from({ length: 8 }, (_, i) => `@user${i}:${serverName}`)
const writer = 'persister1'

/** Database pool of the persister and of the raw baseline (the config's default `pool_size`). */
export const poolSize = 10

/** A running persister with its own pool, Redis bus and ID generators. */
export interface BenchPersister {
  readonly persister: Persister
  readonly db: DatabaseHandle
  /** Mean events per live transaction (all its rooms) since the last call (from the persister's metrics). */
  takeMeanBatch(): Promise<number>
  close(): Promise<void>
}

/**
 * Starts the persister of writer `persister1` on database `url`, configured as in a deployment
 * (pool of `poolSize`, Redis bus, default room concurrency 32 and batch limit 200); `gatherMs`
 * overrides `persister.gather_ms` (4).
 *
 * @example
 * const bench = await startBenchPersister(db.url, ctx.redisUrl)
 * await bench.persister.persist({ requestId, roomId, events })
 * await bench.close()
 */
export async function startBenchPersister(url: string, redisUrl: string, options: { gatherMs?: number } = {}): Promise<BenchPersister> {
  const log = silentLogger()
  const db = createDatabase({ url, poolSize, applicationName: 'bench-persister' })
  const bus: Bus = createBus({ redis: { url: redisUrl }, serverName: `${serverName}-${randomBytes(4).toString('hex')}`, log })
  await bus.start()
  const generator = (stream: 'events' | 'backfill') => createIdGenerator({ db: db.db, stream, writer, writers: [writer], bus, log })
  const [events, backfill] = await Promise.all([generator('events'), generator('backfill')])
  const registry = new Registry()
  const persister = createPersister({
    db: db.db,
    events,
    backfill,
    shardMap: createShardMap({ writers: [writer] }),
    writer,
    serverName,
    signingKey: generateSigningKey('bench'),
    log,
    registry,
    ...(options.gatherMs !== undefined && { gather: { ms: options.gatherMs } }),
  })
  let seen = { sum: 0, count: 0 }
  return {
    persister,
    db,
    async takeMeanBatch() {
      const values = ((await registry.getSingleMetric('myelin_persist_transaction_events')?.get())?.values ?? []) as { metricName?: string; value: number }[]
      const total = (suffix: string) => values.filter((v) => v.metricName === `myelin_persist_transaction_events_${suffix}`).reduce((sum, v) => sum + v.value, 0)
      const now = { sum: total('sum'), count: total('count') }
      const mean = now.count > seen.count ? (now.sum - seen.sum) / (now.count - seen.count) : 0
      seen = now
      return Math.round(mean * 10) / 10
    },
    async close() {
      await persister.close()
      await Promise.all([events.close(), backfill.close()])
      await bus.close()
      await db.close()
    },
  }
}

let requestSeq = 0
const requestId = (): string => `bench-${process.pid}-${++requestSeq}`

/**
 * Creates `count` public rooms through the persister (what `createRoom` with preset
 * `public_chat` persists, then the joins of the message senders), `concurrency` at a time.
 *
 * @example
 * const rooms = await createRooms(bench.persister, 1000, 32, (done) => ctx.progress(`${done} rooms`))
 */
export async function createRooms(persister: Persister, count: number, concurrency: number, onProgress?: (done: number) => void): Promise<string[]> {
  const rooms = Array.from({ length: count }, () => `!${randomBytes(9).toString('base64url')}:${serverName}`)
  let next = 0
  let done = 0
  const worker = async (): Promise<void> => {
    while (next < rooms.length) {
      const roomId = rooms[next++] as string
      await persister.persist({ requestId: requestId(), roomId, events: roomEvents(roomId) })
      if (++done % 250 === 0) onProgress?.(done)
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker))
  return rooms
}

/** What a client's `createRoom` (preset `public_chat`) persists, then the joins of the message senders. */
function roomEvents(roomId: string): NewEvent[] {
  return [
    ...planRoomCreation(roomId, creator, serverName, { preset: 'public_chat' }).events,
    ...senders.map((sender): NewEvent => ({ type: 'm.room.member', state_key: sender, sender, content: { membership: 'join' } })),
  ]
}

/** A message as a client sends it (about 80 characters of body). */
function message(seq: number, i: number): NewEvent {
  return {
    type: 'm.room.message',
    sender: senders[(seq + i) % senders.length] as string,
    content: { msgtype: 'm.text', body: `benchmark message ${seq}.${i}: the quick brown fox jumps over the lazy dog` },
  }
}

/**
 * Closed loop of `concurrency` callers, each sending requests of `batch` messages for
 * `durationMs`; caller k sends to rooms k, k + concurrency, … in turn (so with as many rooms as
 * callers, concurrent requests go to different rooms; with one room, they all queue on it and the
 * persister merges them into batches of up to 200 events).
 *
 * @example
 * const { units, elapsedMs } = await drivePersister(bench.persister, rooms, 100, 32, 3000)
 */
export function drivePersister(persister: Persister, rooms: readonly string[], batch: number, concurrency: number, durationMs: number): Promise<LoopOutcome> {
  const cursor = Array.from({ length: concurrency }, (_, k) => k)
  return closedLoop(concurrency, durationMs, async (worker, seq) => {
    const roomId = rooms[(cursor[worker] as number) % rooms.length] as string
    cursor[worker] = (cursor[worker] as number) + concurrency
    const events = Array.from({ length: batch }, (_, i) => message(seq, i))
    await persister.persist({ requestId: requestId(), roomId, events })
    return batch
  })
}

/** A room of the raw baseline: created with a head row and one forward extremity. */
export async function createRawRooms(pool: pg.Pool, count: number): Promise<string[]> {
  const rooms = Array.from({ length: count }, () => `!raw${randomBytes(9).toString('base64url')}:${serverName}`)
  const now = Date.now()
  await pool.query(
    `INSERT INTO rooms (room_id, room_version, creator, created_ts, owner, epoch, max_depth, last_stream_ordering, forward_extremities)
     SELECT r, '11', $2, $3, 'raw', 1, 5, NULL, ARRAY['$rawinit' || md5(r)] FROM unnest($1::text[]) r`,
    [rooms, creator, now],
  )
  return rooms
}

// Baseline rows are unique but cheap to make: the baseline measures the database, not the JS.
const fakeHash = randomBytes(32).toString('base64').replace(/=+$/, '')
const fakeSignature = randomBytes(64).toString('base64').replace(/=+$/, '')
const fakeAuthEvents = Array.from({ length: 3 }, () => `$${randomBytes(32).toString('base64url')}`)
const idPrefix = `$raw${process.pid}x${randomBytes(4).toString('hex')}x`
let fakeSeq = 0
/** A unique event ID of the real length (44 characters). */
const fakeEventId = (): string => `${idPrefix}${String(++fakeSeq).padStart(44 - idPrefix.length, '0')}`

/** A signed-PDU-shaped JSON text of the size the persister stores for `message`. */
function rawPduJson(roomId: string, sender: string, body: string, prev: string, depth: number, ts: number): string {
  return JSON.stringify({
    auth_events: fakeAuthEvents,
    content: { body, msgtype: 'm.text' },
    depth,
    hashes: { sha256: fakeHash },
    origin_server_ts: ts,
    prev_events: [prev],
    room_id: roomId,
    sender,
    signatures: { [serverName]: { 'ed25519:bench': fakeSignature } },
    type: 'm.room.message',
  })
}

/** `($1, $2, …), (…)` for `rows` rows of `columns` parameters. */
function valuesList(rows: number, columns: number): string {
  const out: string[] = []
  for (let r = 0; r < rows; r++) out.push(`(${Array.from({ length: columns }, (_, c) => `$${r * columns + c + 1}`).join(', ')})`)
  return out.join(', ')
}

/**
 * The raw baseline: the same closed loop as `drivePersister`, each request a transaction of
 * plain multi-row SQL writing the rows a message batch needs, on a pool of `poolSize`:
 * `nextval` × batch; lock and advance the room head, setting its new forward extremity and
 * reading the old one (one `UPDATE rooms … RETURNING`); `INSERT` events, event_json and
 * event_edges (one multi-row statement each). No authorization, hashing, signing or
 * idempotency rows.
 *
 * @example
 * const { units, elapsedMs } = await driveRaw(pool, rawRooms, 100, 32, 3000)
 */
export function driveRaw(pool: pg.Pool, rooms: readonly string[], batch: number, concurrency: number, durationMs: number): Promise<LoopOutcome> {
  const cursor = Array.from({ length: concurrency }, (_, k) => k)
  return closedLoop(concurrency, durationMs, async (worker, seq) => {
    const roomId = rooms[(cursor[worker] as number) % rooms.length] as string
    cursor[worker] = (cursor[worker] as number) + concurrency
    const client = await pool.connect()
    try {
      await client.query('BEGIN')
      const ids = (await client.query<{ id: string }>(`SELECT nextval('events_stream_seq') AS id FROM generate_series(1, $1)`, [batch])).rows.map((r) => r.id)
      const eventIds = Array.from({ length: batch }, fakeEventId)
      // The head row, written once as the persister writes it: its new marks and forward
      // extremity, returning the extremity the batch's first event follows.
      const head = await client.query<{ max_depth: string; prev: string | null }>(
        `WITH old AS (SELECT room_id, forward_extremities[1] AS prev FROM rooms WHERE room_id = $1 FOR UPDATE)
         UPDATE rooms r SET max_depth = r.max_depth + $2, last_stream_ordering = $3, forward_extremities = ARRAY[$4::text]
         FROM old WHERE r.room_id = old.room_id RETURNING r.max_depth, old.prev`,
        [roomId, batch, ids[ids.length - 1], eventIds[batch - 1]],
      )
      const firstDepth = Number(head.rows[0]?.max_depth) - batch + 1
      let prev = head.rows[0]?.prev ?? '$none'
      const now = Date.now()
      const events: unknown[] = []
      const json: unknown[] = []
      const edges: unknown[] = []
      for (let i = 0; i < batch; i++) {
        const eventId = eventIds[i] as string
        const sender = senders[(seq + i) % senders.length] as string
        const body = `benchmark message ${seq}.${i}: the quick brown fox jumps over the lazy dog`
        events.push(ids[i], eventId, roomId, 'm.room.message', null, sender, now, now, firstDepth + i, 'raw', null, null)
        json.push(eventId, roomId, rawPduJson(roomId, sender, body, prev, firstDepth + i, now))
        edges.push(eventId, prev, roomId)
        prev = eventId
      }
      await client.query(
        `INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender, origin_server_ts, received_ts, depth, instance_name, redacts, membership)
         VALUES ${valuesList(batch, 12)}`,
        events,
      )
      await client.query(`INSERT INTO event_json (event_id, room_id, json) VALUES ${valuesList(batch, 3)}`, json)
      await client.query(`INSERT INTO event_edges (event_id, prev_event_id, room_id) VALUES ${valuesList(batch, 3)}`, edges)
      await client.query('COMMIT')
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined)
      throw err
    } finally {
      client.release()
    }
    return batch
  })
}
