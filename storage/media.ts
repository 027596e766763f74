import { randomBytes } from 'node:crypto'
import { sql, type Kysely } from 'kysely'
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
  const row = await db.selectFrom('media').select(['content_type', 'upload_name', 'content', 'expires_ts']).where('media_id', '=', mediaId).executeTakeFirst()
  if (row === undefined) return undefined
  if (row.content === null) return row.expires_ts !== null && Number(row.expires_ts) > now ? { pending: true } : undefined
  return { pending: false, contentType: row.content_type, uploadName: row.upload_name, content: row.content }
}

/** A stored thumbnail: its image, or `original` (the file itself serves at that size). */
export type StoredThumbnail = { readonly kind: 'image'; readonly contentType: string; readonly content: Buffer } | { readonly kind: 'original' }

/** The thumbnail kept for `mediaId` at a configured size (migration 0028), if one was made. */
export async function readThumbnail(db: Kysely<Database>, mediaId: string, size: { width: number; height: number; method: 'crop' | 'scale' }): Promise<StoredThumbnail | undefined> {
  const row = await db
    .selectFrom('media_thumbnails')
    .select(['content_type', 'content'])
    .where('media_id', '=', mediaId)
    .where('width', '=', size.width)
    .where('height', '=', size.height)
    .where('method', '=', size.method)
    .executeTakeFirst()
  if (row === undefined) return undefined
  return row.content === null || row.content_type === null ? { kind: 'original' } : { kind: 'image', contentType: row.content_type, content: row.content }
}

/** Keeps a thumbnail made for `mediaId`; a concurrent writer's row for the same size wins. */
export async function storeThumbnail(db: Kysely<Database>, mediaId: string, size: { width: number; height: number; method: 'crop' | 'scale' }, thumbnail: StoredThumbnail, now: number): Promise<void> {
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
  readonly quarantined_by: null
  readonly safe_from_quarantine: false
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
      .select(['media_id', 'content_type', 'size', 'upload_name', 'created_ts'])
      .where('user_id', '=', userId)
      .orderBy('created_ts', page.dir === 'f' ? 'asc' : 'desc')
      .orderBy('media_id', page.dir === 'f' ? 'asc' : 'desc')
      .limit(page.limit)
      .offset(page.offset)
      .execute(),
    db.selectFrom('media').select((eb) => eb.fn.countAll<string>().as('n')).where('user_id', '=', userId).executeTakeFirstOrThrow(),
  ])
  return {
    media: rows.map((row) => ({
      media_id: row.media_id,
      media_type: row.content_type,
      media_length: Number(row.size),
      upload_name: row.upload_name,
      created_ts: Number(row.created_ts),
      last_access_ts: null,
      quarantined_by: null,
      safe_from_quarantine: false,
    })),
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
