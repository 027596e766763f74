import { sql, type Kysely } from 'kysely'
import { lockRoomHistory, withClaim } from './admin.js'
import type { Database } from './schema.js'

/**
 * Purging a room's old history (Synapse's purge history admin API): the events before a point in
 * the room's DAG are deleted, to reclaim space, while the room stays whole.
 *
 * - Deleted: the events of a depth lower than the purge point's (the point and the events at its
 *   depth stay) that are not state, with their JSON, DAG edges, relations, redaction rows,
 *   search entries and transaction IDs.
 * - Kept: every state event (joins, topic, power levels: the room's authorization needs them,
 *   and `/state` and sync show them), the forward extremities (so the latest event always
 *   stays), and, unless `deleteLocalEvents`, the events of this server's users (they may be the
 *   only copies in existence).
 * - The DAG stays consistent: an event that a kept event names in its `prev_events` and that is
 *   deleted becomes a backward extremity, as after an import that stopped there; `/messages`
 *   ends at the purge point.
 *
 * The deletes go in chunks, each one transaction that also moves the purge's cursor on, so a
 * purge of millions of events neither holds a long transaction nor starts over when its process
 * stops. Stream positions are not touched (sync tokens stay valid); the room's writer, which
 * only appends after its forward extremities, goes on meanwhile.
 */

type Db = Kysely<Database>

export type HistoryPurgeStatus = 'active' | 'complete' | 'failed'

/** One purge as its status shows it. */
export interface HistoryPurge {
  readonly purgeId: string
  readonly roomId: string
  readonly status: HistoryPurgeStatus
  /** Events deleted so far. */
  readonly deleted: number
  readonly error?: string
}

/** Where a purge stops: at an event of the room, or at the first event sent at or after a time. */
export type PurgePoint = { readonly eventId: string } | { readonly ts: number }

/**
 * The depth a purge up to `point` deletes below, or undefined when the event is not one of the
 * room's. Up to a time: the depth of the first event sent at or after it, never above the room's
 * latest depth (its latest events always stay).
 *
 * @example
 * await purgeDepth(db, '!r:hs', { eventId: '$e' }) // 42n: events of depth < 42 go
 */
export async function purgeDepth(db: Db, roomId: string, point: PurgePoint): Promise<bigint | undefined> {
  if ('eventId' in point) {
    const row = await db.selectFrom('events').select('depth').where('event_id', '=', point.eventId).where('room_id', '=', roomId).executeTakeFirst()
    return row === undefined ? undefined : BigInt(row.depth)
  }
  // The room's events in depth order up to the first sent at or after the time: the index walk
  // stops there, so a room purged regularly reads little more than its state events.
  const { rows } = await sql<{ depth: string | null }>`
    SELECT least(
      (SELECT depth FROM events WHERE room_id = ${roomId} AND origin_server_ts >= ${point.ts} ORDER BY depth LIMIT 1),
      (SELECT max_depth FROM rooms WHERE room_id = ${roomId})
    ) AS depth`.execute(db)
  const depth = rows[0]?.depth
  return depth === null || depth === undefined ? undefined : BigInt(depth)
}

/** Records a purge that starts now (status `active`). */
export async function startHistoryPurge(db: Db, purge: { purgeId: string; roomId: string; upToDepth: bigint; deleteLocalEvents: boolean; now: number }): Promise<void> {
  await db
    .insertInto('history_purges')
    .values({ purge_id: purge.purgeId, room_id: purge.roomId, status: 'active', up_to_depth: purge.upToDepth, delete_local_events: purge.deleteLocalEvents, started_ts: purge.now })
    .execute()
}

/** A purge by its ID. */
export async function historyPurge(db: Db, purgeId: string): Promise<HistoryPurge | undefined> {
  const row = await db.selectFrom('history_purges').select(['purge_id', 'room_id', 'status', 'deleted', 'error']).where('purge_id', '=', purgeId).executeTakeFirst()
  if (row === undefined) return undefined
  return { purgeId: row.purge_id, roomId: row.room_id, status: row.status as HistoryPurgeStatus, deleted: Number(row.deleted), ...(row.error !== null && { error: row.error }) }
}

/** IDs of the purges not finished, oldest first. */
export async function unfinishedHistoryPurges(db: Db): Promise<string[]> {
  const rows = await db.selectFrom('history_purges').select('purge_id').where('status', '=', 'active').orderBy('started_ts').execute()
  return rows.map((row) => row.purge_id)
}

/** Forgets a finished purge (retention's own, which nobody asks the status of). */
export async function forgetHistoryPurge(db: Db, purgeId: string): Promise<void> {
  await db.deleteFrom('history_purges').where('purge_id', '=', purgeId).where('status', '<>', 'active').execute()
}

/**
 * Whether a purge below `upToDepth` has anything to delete: a non-state event there (the
 * forward extremities and the senders' servers aside, which the purge itself checks).
 */
export async function hasEventsBelow(db: Db, roomId: string, upToDepth: bigint): Promise<boolean> {
  const row = await db.selectFrom('events').select('event_id').where('room_id', '=', roomId).where('depth', '<', upToDepth).where('state_key', 'is', null).limit(1).executeTakeFirst()
  return row !== undefined
}

/**
 * The `max_lifetime` (ms) of each room's current `m.room.retention` policy; rooms whose policy
 * sets none map to undefined (the server's default applies).
 *
 * @example
 * await retentionPolicies(db) // Map { '!r:hs' => 86400000, '!s:hs' => undefined }
 */
export async function retentionPolicies(db: Db): Promise<Map<string, number | undefined>> {
  const rows = await db
    .selectFrom('current_state_events as c')
    .innerJoin('event_json as j', 'j.event_id', 'c.event_id')
    .select(['c.room_id', 'j.json'])
    .where('c.type', '=', 'm.room.retention')
    .where('c.state_key', '=', '')
    .execute()
  return new Map(
    rows.map((row) => {
      const content = (JSON.parse(row.json) as { content?: Record<string, unknown> }).content ?? {}
      const max = content['max_lifetime']
      return [row.room_id, typeof max === 'number' && Number.isSafeInteger(max) && max > 0 ? max : undefined]
    }),
  )
}

/** The retention rule in force, for reads to hide what it expired (see migration 0032). */
export interface RetentionRule {
  readonly defaultMaxLifetimeMs?: number
  readonly allowedLifetimeMinMs?: number
  readonly allowedLifetimeMaxMs?: number
}

/**
 * Puts `rule` in force for every process's reads, or none (retention off).
 *
 * @example
 * await setRetentionRule(db, { defaultMaxLifetimeMs: 86_400_000 })
 */
export async function setRetentionRule(db: Db, rule: RetentionRule | undefined): Promise<void> {
  knownRules.delete(db)
  if (rule === undefined) {
    await db.deleteFrom('retention_settings').execute()
    return
  }
  const values = {
    default_max_lifetime_ms: rule.defaultMaxLifetimeMs ?? null,
    allowed_lifetime_min_ms: rule.allowedLifetimeMinMs ?? null,
    allowed_lifetime_max_ms: rule.allowedLifetimeMaxMs ?? null,
  }
  await db.insertInto('retention_settings').values(values).onConflict((oc) => oc.column('singleton').doUpdateSet(values)).execute()
}

/** How long a process goes on with the retention rule it read (another process may change it). */
export const retentionRuleTtlMs = 10_000

const knownRules = new WeakMap<object, { readonly at: number; readonly rule: Promise<RetentionRule | undefined> }>()

/**
 * The retention rule in force, read at most every `retentionRuleTtlMs` per database handle (the
 * visibility check asks for it on every read; it changes when the background process starts).
 *
 * @example
 * await retentionRule(db) // undefined: retention is off
 */
export function retentionRule(db: Db): Promise<RetentionRule | undefined> {
  const known = knownRules.get(db)
  if (known !== undefined && Date.now() - known.at < retentionRuleTtlMs) return known.rule
  const rule = db
    .selectFrom('retention_settings')
    .selectAll()
    .executeTakeFirst()
    .then((row) =>
      row === undefined
        ? undefined
        : {
            ...(row.default_max_lifetime_ms !== null && { defaultMaxLifetimeMs: Number(row.default_max_lifetime_ms) }),
            ...(row.allowed_lifetime_min_ms !== null && { allowedLifetimeMinMs: Number(row.allowed_lifetime_min_ms) }),
            ...(row.allowed_lifetime_max_ms !== null && { allowedLifetimeMaxMs: Number(row.allowed_lifetime_max_ms) }),
          },
    )
  knownRules.set(db, { at: Date.now(), rule })
  rule.catch(() => knownRules.delete(db))
  return rule
}

/** Every room's ID. */
export async function roomIds(db: Db): Promise<string[]> {
  return (await db.selectFrom('rooms').select('room_id').orderBy('room_id').execute()).map((row) => row.room_id)
}

/** Marks a purge failed, with why. */
export async function failHistoryPurge(db: Db, purgeId: string, error: string): Promise<void> {
  await db.updateTable('history_purges').set({ status: 'failed', error }).where('purge_id', '=', purgeId).execute()
}

/**
 * Runs an active purge to its end, chunk by chunk, under its claim (one process at a time; see
 * `withClaim`). `shouldStop` is asked between chunks: a purge stopped there (its process closing)
 * stays active for a resume.
 *
 * @returns false when another process holds the claim or the purge is not active; else true.
 * @example
 * await runHistoryPurge(db, purgeId, { localServer: 'example.org', chunk: 1000, shouldStop: () => closing })
 */
export async function runHistoryPurge(db: Db, purgeId: string, options: { localServer: string; chunk?: number; shouldStop?: () => boolean; onChunk?: (deleted: number) => void }): Promise<boolean> {
  return withClaim(db, `myelin.history_purge.${purgeId}`, async () => {
    for (;;) {
      if (options.shouldStop?.() === true) return true
      const step = await purgeChunk(db, purgeId, options.localServer, options.chunk ?? 1000)
      if (step === undefined) return false
      options.onChunk?.(step.deleted)
      if (step.done) return true
    }
  })
}

/**
 * Looks at the next `limit` events below the purge point after the cursor and deletes those to
 * delete, in one transaction with the cursor's move (and the status, after the last chunk).
 *
 * @returns undefined when the purge is not active.
 */
async function purgeChunk(db: Db, purgeId: string, localServer: string, limit: number): Promise<{ deleted: number; done: boolean } | undefined> {
  return db.transaction().execute(async (trx) => {
    const purge = await trx.selectFrom('history_purges').selectAll().where('purge_id', '=', purgeId).forUpdate().executeTakeFirst()
    if (purge === undefined || purge.status !== 'active') return undefined
    await lockRoomHistory(trx, purge.room_id)
    // A room deleted meanwhile has no history left to purge.
    const room = await trx.selectFrom('rooms').select('room_id').where('room_id', '=', purge.room_id).executeTakeFirst()
    if (room === undefined) {
      await trx.updateTable('history_purges').set({ status: 'failed', error: 'the room was deleted' }).where('purge_id', '=', purgeId).execute()
      return { deleted: 0, done: true }
    }
    const after = purge.cursor_depth === null ? sql`true` : sql`(e.depth, e.stream_ordering) > (${purge.cursor_depth}, ${purge.cursor_stream})`
    const { rows } = await sql<{ event_id: string; depth: string; stream_ordering: string; deletable: boolean }>`
      SELECT e.event_id, e.depth, e.stream_ordering,
        e.state_key IS NULL
          AND NOT EXISTS (SELECT 1 FROM event_forward_extremities f WHERE f.room_id = e.room_id AND f.event_id = e.event_id)
          AND (${purge.delete_local_events} OR NOT e.sender LIKE ${`%:${localServer.replace(/[\\%_]/g, '\\$&')}`}) AS deletable
      FROM events e
      WHERE e.room_id = ${purge.room_id} AND e.depth < ${purge.up_to_depth} AND ${after}
      ORDER BY e.depth, e.stream_ordering
      LIMIT ${limit}`.execute(trx)
    const victims = rows.filter((row) => row.deletable).map((row) => row.event_id)
    if (victims.length > 0) await deleteEvents(trx, purge.room_id, victims)
    const last = rows.at(-1)
    const done = rows.length < limit
    await trx
      .updateTable('history_purges')
      .set({
        deleted: sql`deleted + ${victims.length}`,
        ...(last !== undefined && { cursor_depth: BigInt(last.depth), cursor_stream: BigInt(last.stream_ordering) }),
        ...(done && { status: 'complete' }),
      })
      .where('purge_id', '=', purgeId)
      .execute()
    return { deleted: victims.length, done }
  })
}

/** Deletes events of a room and what hangs off them, keeping the DAG's backward extremities right. */
async function deleteEvents(trx: Db, roomId: string, eventIds: readonly string[]): Promise<void> {
  const ids = sql`${eventIds}::text[]`
  // The events these name: once they are gone, those no kept event names are extremities no more.
  const { rows: prevs } = await sql<{ prev_event_id: string }>`DELETE FROM event_edges WHERE event_id = ANY(${ids}) RETURNING prev_event_id`.execute(trx)
  for (const table of ['event_json', 'redactions', 'event_relations', 'event_search', 'event_txn_ids'] as const) {
    await sql`DELETE FROM ${sql.table(table)} WHERE event_id = ANY(${ids})`.execute(trx)
  }
  await sql`DELETE FROM events WHERE event_id = ANY(${ids})`.execute(trx)
  // A deleted event a kept one names becomes a backward extremity.
  await sql`
    INSERT INTO event_backward_extremities (room_id, event_id)
    SELECT DISTINCT ${roomId}::text, prev_event_id FROM event_edges WHERE prev_event_id = ANY(${ids})
    ON CONFLICT DO NOTHING`.execute(trx)
  await sql`
    DELETE FROM event_backward_extremities b
    WHERE b.room_id = ${roomId} AND b.event_id = ANY(${[...new Set(prevs.map((p) => p.prev_event_id))]}::text[])
      AND NOT EXISTS (SELECT 1 FROM event_edges e WHERE e.prev_event_id = b.event_id)`.execute(trx)
}
