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
