import { randomBytes } from 'node:crypto'
import type { Kysely } from 'kysely'
import type { Database } from './schema.js'

/**
 * The content repository's files (migration 0020): bytes and what the uploader said of them, in
 * PostgreSQL, so that any api worker serves any file.
 */

export interface StoredMedia {
  readonly contentType: string
  readonly uploadName: string | null
  readonly content: Buffer
}

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

/** A stored file, or undefined. */
export async function readMedia(db: Kysely<Database>, mediaId: string): Promise<StoredMedia | undefined> {
  const row = await db.selectFrom('media').select(['content_type', 'upload_name', 'content']).where('media_id', '=', mediaId).executeTakeFirst()
  return row === undefined ? undefined : { contentType: row.content_type, uploadName: row.upload_name, content: row.content }
}
