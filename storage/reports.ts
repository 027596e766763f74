import { sql, type Kysely, type RawBuilder } from 'kysely'
import type { JsonObject } from './events/redaction.js'
import type { Database } from './schema.js'
import { getStateEntries } from './state-entries.js'

/**
 * Content reports (client-server API "Reporting content"): a user reports an event, or a whole
 * room, to the server's admins, who list them (Synapse's admin API `event_reports`).
 */

export interface NewReport {
  readonly roomId: string
  /** Absent: the room itself. */
  readonly eventId?: string
  readonly userId: string
  readonly reason?: string
  readonly score?: number
  readonly now: number
}

/** Stores a report; returns its ID. */
export async function addReport(db: Kysely<Database>, report: NewReport): Promise<bigint> {
  const row = await db
    .insertInto('event_reports')
    .values({ received_ts: report.now, room_id: report.roomId, event_id: report.eventId ?? null, user_id: report.userId, reason: report.reason ?? null, score: report.score ?? null })
    .returning('id')
    .executeTakeFirstOrThrow()
  return BigInt(row.id)
}

export interface ReportsQuery {
  /** Reports skipped (the admin API's `from`, an offset as Synapse's). */
  readonly from: number
  readonly limit: number
  /** `b`: newest first (the default); `f`: oldest first. */
  readonly dir: 'b' | 'f'
  readonly roomId?: string
  readonly userId?: string
}

/** One report as Synapse's admin API shows it. */
export interface ReportEntry {
  readonly id: number
  readonly received_ts: number
  readonly room_id: string
  readonly event_id: string | null
  readonly user_id: string
  readonly reason: string | null
  readonly score: number | null
  /** The reported event's sender. */
  readonly sender: string | null
  /** The room's current name and canonical alias. */
  readonly name: string | null
  readonly canonical_alias: string | null
}

/**
 * A page of reports with the total matching `roomId` and `userId`, and the `next_token` (an
 * offset) when more follow.
 *
 * @example
 * const { event_reports, total } = await reportsPage(db, { from: 0, limit: 100, dir: 'b' })
 */
export async function reportsPage(db: Kysely<Database>, q: ReportsQuery): Promise<{ event_reports: ReportEntry[]; total: number; next_token?: number }> {
  const where = sql.join(
    [sql`true`, ...(q.roomId !== undefined ? [sql`r.room_id = ${q.roomId}`] : []), ...(q.userId !== undefined ? [sql`r.user_id = ${q.userId}`] : [])],
    sql` AND `,
  )
  const [reports, total] = await Promise.all([
    selectReports(db, where, { dir: q.dir, limit: q.limit, offset: q.from }),
    sql<{ n: string }>`SELECT count(*)::text AS n FROM event_reports r WHERE ${where}`.execute(db),
  ])
  const count = Number(total.rows[0]?.n ?? 0)
  return { event_reports: reports, total: count, ...(q.from + reports.length < count && { next_token: q.from + reports.length }) }
}

/**
 * One report, with the reported event as stored (`event_json`, null for a room report or an
 * event no longer stored), or undefined.
 *
 * @example
 * (await reportById(db, 7))?.event_json?.type // 'm.room.message'
 */
export async function reportById(db: Kysely<Database>, id: number): Promise<(ReportEntry & { event_json: JsonObject | null }) | undefined> {
  const [report] = await selectReports(db, sql`r.id = ${id}::int8`, { dir: 'f', limit: 1, offset: 0 })
  if (report === undefined) return undefined
  const json = report.event_id === null ? undefined : await db.selectFrom('event_json').select('json').where('event_id', '=', report.event_id).executeTakeFirst()
  return { ...report, event_json: json === undefined ? null : (JSON.parse(json.json) as JsonObject) }
}

/** Deletes one report; false when there is none. */
export async function deleteReport(db: Kysely<Database>, id: number): Promise<boolean> {
  const result = await db.deleteFrom('event_reports').where('id', '=', BigInt(id)).executeTakeFirst()
  return result.numDeletedRows > 0n
}

/** The reports `where` selects, in ID order, with the reported event's sender and the room's current name and canonical alias. */
async function selectReports(db: Kysely<Database>, where: RawBuilder<unknown>, page: { dir: 'b' | 'f'; limit: number; offset: number }): Promise<ReportEntry[]> {
  const { rows } = await sql<{ id: string; received_ts: string; room_id: string; event_id: string | null; user_id: string; reason: string | null; score: number | null; sender: string | null }>`
    SELECT r.id::text, r.received_ts::text, r.room_id, r.event_id, r.user_id, r.reason, r.score, e.sender
    FROM event_reports r LEFT JOIN events e ON e.event_id = r.event_id
    WHERE ${where}
    ORDER BY r.id ${page.dir === 'b' ? sql`DESC` : sql`ASC`}
    LIMIT ${page.limit}::int OFFSET ${page.offset}::int`.execute(db)
  const state = await getStateEntries(db, rows.map((row) => row.room_id), [
    { type: 'm.room.name', stateKey: '' },
    { type: 'm.room.canonical_alias', stateKey: '' },
  ])
  const text = (roomId: string, type: string, field: string): string | null => {
    const value = state.find((entry) => entry.roomId === roomId && entry.type === type)?.content[field]
    return typeof value === 'string' ? value : null
  }
  return rows.map((row) => ({
    ...row,
    id: Number(row.id),
    received_ts: Number(row.received_ts),
    name: text(row.room_id, 'm.room.name', 'name'),
    canonical_alias: text(row.room_id, 'm.room.canonical_alias', 'alias'),
  }))
}
