import type { Kysely } from 'kysely'
import type { Database } from './schema.js'

/** A user's own message rate limit (Synapse's `override_ratelimit`); 0 and 0 mean no limit. */
export interface RatelimitOverride {
  readonly messages_per_second: number
  readonly burst_count: number
}

/** The user's override, or undefined when they have the configured limit. */
export async function getRatelimitOverride(db: Kysely<Database>, userId: string): Promise<RatelimitOverride | undefined> {
  return db.selectFrom('ratelimit_overrides').select(['messages_per_second', 'burst_count']).where('user_id', '=', userId).executeTakeFirst()
}

/** Sets (or replaces) the user's override. */
export async function setRatelimitOverride(db: Kysely<Database>, userId: string, override: RatelimitOverride): Promise<void> {
  await db
    .insertInto('ratelimit_overrides')
    .values({ user_id: userId, ...override })
    .onConflict((oc) => oc.column('user_id').doUpdateSet(override))
    .execute()
}

/** Removes the user's override; false when they had none. */
export async function deleteRatelimitOverride(db: Kysely<Database>, userId: string): Promise<boolean> {
  const result = await db.deleteFrom('ratelimit_overrides').where('user_id', '=', userId).executeTakeFirst()
  return result.numDeletedRows > 0n
}
