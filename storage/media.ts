import { randomBytes } from 'node:crypto'
import { sql, type Kysely } from 'kysely'
import type { ThumbnailSize } from './config.js'
import type { Database } from './schema.js'

/**
 * The content repository's files (migration 0020): bytes and what the uploader said of them, in
 * PostgreSQL, so that any api worker serves any file. A file can also be created first and
 * uploaded later (asynchronous uploads, spec v1.7): its row then has no content until then, and
 * is dropped from use when `expires_ts` passes unused.
 */

export type StoredMedia =
  | { readonly pending: false; readonly contentType: string; readonly uploadName: string | null; readonly content: Buffer }
  | { readonly pending: true }

/** A new media ID: 24 random URL-safe characters, as Synapse's. */
export function newMediaId(): string {
  return randomBytes(18).toString('base64url')
}

/**
 * Stores an upload; returns its media ID.
 *
 * @example
 * const mediaId = await storeMedia(db, { userId: '@alice:hs', contentType: 'image/png', uploadName: 'cat.png', content, now: Date.now() })
 */
export async function storeMedia(db: Kysely<Database>, upload: { userId: string; contentType: string; uploadName?: string; content: Buffer; now: number }): Promise<string> {
  const mediaId = newMediaId()
  await db
    .insertInto('media')
    .values({ media_id: mediaId, user_id: upload.userId, content_type: upload.contentType, upload_name: upload.uploadName ?? null, size: upload.content.length, created_ts: upload.now, content: upload.content })
    .execute()
  return mediaId
}

/**
 * Creates a media ID for `userId` to upload to before `expiresTs`, unless they already have
 * `maxPending` such IDs unused (then undefined).
 */
export async function createPendingMedia(db: Kysely<Database>, q: { userId: string; now: number; expiresTs: number; maxPending: number }): Promise<string | undefined> {
  const mediaId = newMediaId()
  const { rows } = await sql<{ media_id: string }>`
    INSERT INTO media (media_id, user_id, content_type, size, created_ts, content, expires_ts)
    SELECT ${mediaId}, ${q.userId}, 'application/octet-stream', 0, ${q.now}::int8, NULL, ${q.expiresTs}::int8
    WHERE (SELECT count(*) FROM media WHERE user_id = ${q.userId} AND content IS NULL AND expires_ts > ${q.now}::int8) < ${q.maxPending}::int
    RETURNING media_id`.execute(db)
  return rows[0]?.media_id
}

/**
 * Uploads the content of a created media ID: only its creator, only once, only before it expired.
 *
 * @returns `ok`, or why not: `not-found` (unknown or expired), `forbidden` (another user's), `exists` (uploaded already).
 */
export async function fillPendingMedia(
  db: Kysely<Database>,
  upload: { mediaId: string; userId: string; contentType: string; uploadName?: string; content: Buffer; now: number },
): Promise<'ok' | 'not-found' | 'forbidden' | 'exists'> {
  const filled = await db
    .updateTable('media')
    .set({ content: upload.content, content_type: upload.contentType, upload_name: upload.uploadName ?? null, size: upload.content.length, expires_ts: null })
    .where('media_id', '=', upload.mediaId)
    .where('user_id', '=', upload.userId)
    .where('content', 'is', null)
    .where(sql<boolean>`expires_ts > ${upload.now}::int8`)
    .executeTakeFirst()
  if (Number(filled.numUpdatedRows) === 1) return 'ok'
  const row = await db.selectFrom('media').select(['user_id', 'expires_ts', sql<boolean>`content IS NOT NULL`.as('uploaded')]).where('media_id', '=', upload.mediaId).executeTakeFirst()
  if (row === undefined) return 'not-found'
  if (row.user_id !== upload.userId) return 'forbidden'
  if (row.uploaded) return 'exists'
  return 'not-found'
}

/** A stored file, one still to be uploaded (`pending`), or undefined (unknown, or created and left to expire). */
export async function readMedia(db: Kysely<Database>, mediaId: string, now: number): Promise<StoredMedia | undefined> {
  const row = await db
    .selectFrom('media')
    .select(['content_type', 'upload_name', 'content', 'expires_ts'])
    .where('media_id', '=', mediaId)
    .where('quarantined_by', 'is', null)
    .executeTakeFirst()
  if (row === undefined) return undefined
  if (row.content === null) return row.expires_ts !== null && Number(row.expires_ts) > now ? { pending: true } : undefined
  return { pending: false, contentType: row.content_type, uploadName: row.upload_name, content: row.content }
}

/** A stored thumbnail: its image, or `original` (the file itself serves at that size). */
export type StoredThumbnail = { readonly kind: 'image'; readonly contentType: string; readonly content: Buffer } | { readonly kind: 'original' }

/** The thumbnail kept for `mediaId` at a configured size (migration 0028), if one was made. */
export async function readThumbnail(db: Kysely<Database>, mediaId: string, size: ThumbnailSize): Promise<StoredThumbnail | undefined> {
  // A quarantined file's thumbnails are not served either.
  const row = await db
    .selectFrom('media_thumbnails as t')
    .innerJoin('media as m', 'm.media_id', 't.media_id')
    .select(['t.content_type', 't.content'])
    .where('t.media_id', '=', mediaId)
    .where('m.quarantined_by', 'is', null)
    .where('width', '=', size.width)
    .where('height', '=', size.height)
    .where('method', '=', size.method)
    .executeTakeFirst()
  if (row === undefined) return undefined
  return row.content === null || row.content_type === null ? { kind: 'original' } : { kind: 'image', contentType: row.content_type, content: row.content }
}

/** Keeps a thumbnail made for `mediaId`; a concurrent writer's row for the same size wins. */
export async function storeThumbnail(db: Kysely<Database>, mediaId: string, size: ThumbnailSize, thumbnail: StoredThumbnail, now: number): Promise<void> {
  await db
    .insertInto('media_thumbnails')
    .values({
      media_id: mediaId,
      ...size,
      content_type: thumbnail.kind === 'image' ? thumbnail.contentType : null,
      content: thumbnail.kind === 'image' ? thumbnail.content : null,
      created_ts: now,
    })
    .onConflict((oc) => oc.doNothing())
    .execute()
}

/** One file as Synapse's admin API lists a user's media. */
export interface MediaInfo {
  readonly media_id: string
  readonly media_type: string
  readonly media_length: number
  readonly upload_name: string | null
  readonly created_ts: number
  readonly last_access_ts: null
  /** The admin who quarantined it (no longer served). */
  readonly quarantined_by: string | null
  readonly safe_from_quarantine: boolean
}

const mediaInfoColumns = ['media_id', 'content_type', 'size', 'upload_name', 'created_ts', 'quarantined_by', 'safe_from_quarantine'] as const

function toMediaInfo(row: { media_id: string; content_type: string; size: string | number | bigint; upload_name: string | null; created_ts: string | number | bigint; quarantined_by: string | null; safe_from_quarantine: boolean }): MediaInfo {
  return {
    media_id: row.media_id,
    media_type: row.content_type,
    media_length: Number(row.size),
    upload_name: row.upload_name,
    created_ts: Number(row.created_ts),
    last_access_ts: null,
    quarantined_by: row.quarantined_by,
    safe_from_quarantine: row.safe_from_quarantine,
  }
}

/** One local file's admin view, or undefined when there is none. */
export async function mediaInfo(db: Kysely<Database>, mediaId: string): Promise<MediaInfo | undefined> {
  const row = await db.selectFrom('media').select(mediaInfoColumns).where('media_id', '=', mediaId).executeTakeFirst()
  return row && toMediaInfo(row)
}

/**
 * A page of `userId`'s files, newest first (`dir` `b`, the default) or oldest first, and how many
 * they have. Pending (created, never uploaded) files are listed too, with length 0.
 *
 * @example
 * const { media, total } = await userMedia(db, '@alice:hs', { offset: 0, limit: 100, dir: 'b' })
 */
export async function userMedia(db: Kysely<Database>, userId: string, page: { offset: number; limit: number; dir: 'f' | 'b' }): Promise<{ media: MediaInfo[]; total: number }> {
  const [rows, total] = await Promise.all([
    db
      .selectFrom('media')
      .select(mediaInfoColumns)
      .where('user_id', '=', userId)
      .orderBy('created_ts', page.dir === 'f' ? 'asc' : 'desc')
      .orderBy('media_id', page.dir === 'f' ? 'asc' : 'desc')
      .limit(page.limit)
      .offset(page.offset)
      .execute(),
    db.selectFrom('media').select((eb) => eb.fn.countAll<string>().as('n')).where('user_id', '=', userId).executeTakeFirstOrThrow(),
  ])
  return {
    media: rows.map(toMediaInfo),
    total: Number(total.n),
  }
}

/**
 * Deletes files: one by ID, or all of a user's. Downloads of them answer 404 from then on.
 *
 * @returns the IDs deleted, sorted.
 * @example
 * await deleteMedia(db, { userId: '@spammer:hs' }) // ['abc…', 'def…']
 */
export async function deleteMedia(db: Kysely<Database>, which: { mediaId: string } | { userId: string }): Promise<string[]> {
  const rows = await db
    .deleteFrom('media')
    .$if('mediaId' in which, (qb) => qb.where('media_id', '=', (which as { mediaId: string }).mediaId))
    .$if('userId' in which, (qb) => qb.where('user_id', '=', (which as { userId: string }).userId))
    .returning('media_id')
    .execute()
  return rows.map((row) => row.media_id).sort()
}

/**
 * Quarantines files (`by`: the admin's user ID; they are no longer served, thumbnails included)
 * or lifts their quarantine (`by` null): one by ID, all of a user's, or those of a list. A
 * protected file (`setProtected`) is never quarantined.
 *
 * @returns how many files changed.
 * @example
 * await setQuarantine(db, { userId: '@spammer:hs' }, '@admin:hs') // 12
 */
export async function setQuarantine(db: Kysely<Database>, which: { mediaId: string } | { userId: string } | { mediaIds: readonly string[] }, by: string | null): Promise<number> {
  if ('mediaIds' in which && which.mediaIds.length === 0) return 0
  const result = await db
    .updateTable('media')
    .set({ quarantined_by: by })
    .$if('mediaId' in which, (qb) => qb.where('media_id', '=', (which as { mediaId: string }).mediaId))
    .$if('userId' in which, (qb) => qb.where('user_id', '=', (which as { userId: string }).userId))
    .$if('mediaIds' in which, (qb) => qb.where('media_id', 'in', (which as { mediaIds: readonly string[] }).mediaIds))
    .$if(by !== null, (qb) => qb.where('safe_from_quarantine', '=', false).where('quarantined_by', 'is', null))
    .$if(by === null, (qb) => qb.where('quarantined_by', 'is not', null))
    .executeTakeFirst()
  return Number(result.numUpdatedRows)
}

/** Protects a file from quarantine, or lifts that; false when there is no such file. */
export async function setProtected(db: Kysely<Database>, mediaId: string, safe: boolean): Promise<boolean> {
  const result = await db.updateTable('media').set({ safe_from_quarantine: safe }).where('media_id', '=', mediaId).executeTakeFirst()
  return Number(result.numUpdatedRows) > 0
}

/**
 * The media IDs of this server's files that the room's events name (`mxc://<serverName>/<id>`
 * anywhere in an event: a file, an image's thumbnail, an avatar), for quarantining a room's media.
 */
export async function mediaIdsInRoom(db: Kysely<Database>, roomId: string, serverName: string): Promise<string[]> {
  const pattern = `mxc://${serverName.replace(/[.*+?^${}()|[\]\\-]/g, '\\$&')}/([A-Za-z0-9_-]+)`
  const { rows } = await sql<{ media_id: string }>`
    SELECT DISTINCT m[1] AS media_id
    FROM events e JOIN event_json j ON j.event_id = e.event_id, regexp_matches(j.json, ${pattern}, 'g') AS m
    WHERE e.room_id = ${roomId}`.execute(db)
  return rows.map((row) => row.media_id).sort()
}

/**
 * Deletes this server's files uploaded before `beforeTs` (retention), larger than `sizeGt`
 * bytes, except protected ones and, with `keepProfiles`, those used as a user's or a room's
 * avatar. Files created for an upload that never came are deleted too once that old.
 *
 * @returns the IDs deleted, sorted.
 */
export async function deleteMediaBefore(db: Kysely<Database>, q: { beforeTs: number; sizeGt: number; keepProfiles: boolean; serverName: string }): Promise<string[]> {
  const prefix = `mxc://${q.serverName}/`
  const avatars = q.keepProfiles
    ? sql`AND NOT EXISTS (SELECT 1 FROM profiles p WHERE p.avatar_url = ${prefix} || m.media_id)
          AND NOT EXISTS (
            SELECT 1 FROM current_state_events c JOIN event_json j ON j.event_id = c.event_id
            WHERE c.type = 'm.room.avatar' AND c.state_key = '' AND (j.json::jsonb -> 'content' ->> 'url') = ${prefix} || m.media_id)`
    : sql``
  const { rows } = await sql<{ media_id: string }>`
    DELETE FROM media m
    WHERE m.created_ts < ${q.beforeTs}::int8 AND m.size > ${q.sizeGt}::int8 AND NOT m.safe_from_quarantine ${avatars}
    RETURNING m.media_id`.execute(db)
  return rows.map((row) => row.media_id).sort()
}
