import type { Kysely } from 'kysely'
import type { Database } from './schema.js'

/**
 * Display names and avatar URLs of local users (`profiles`, migrations/0005-profiles.sql). A row
 * exists for every user registered through the API; a user without one has no profile (404).
 */

export interface Profile {
  readonly displayname: string | null
  readonly avatar_url: string | null
}

/**
 * @example
 * await getProfile(db, '@alice:example.org') // { displayname: 'alice', avatar_url: null } | undefined
 */
export async function getProfile(db: Kysely<Database>, userId: string): Promise<Profile | undefined> {
  return db.selectFrom('profiles').select(['displayname', 'avatar_url']).where('user_id', '=', userId).executeTakeFirst()
}

/**
 * Creates the user's profile or changes the given fields of it (absent fields keep their value).
 * The user row MUST exist (foreign key).
 *
 * @example
 * await setProfile(db, '@alice:example.org', { displayname: 'Alice' })
 */
export async function setProfile(db: Kysely<Database>, userId: string, fields: Partial<Profile>): Promise<void> {
  await db
    .insertInto('profiles')
    .values({ user_id: userId, displayname: fields.displayname ?? null, avatar_url: fields.avatar_url ?? null })
    .onConflict((oc) => (Object.keys(fields).length === 0 ? oc.column('user_id').doNothing() : oc.column('user_id').doUpdateSet(fields)))
    .execute()
}
