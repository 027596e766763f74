import { sql, type Kysely } from 'kysely'
import type { Database } from './schema.js'

/**
 * Sync filters uploaded with `POST /user/{userId}/filter` (`user_filters`). IDs are numbered per
 * user from 0 and handed to clients as decimal strings. Uploading a filter identical (as jsonb)
 * to one the user already has returns that filter's ID, as Synapse does, so clients that upload
 * the same filter at every start do not grow the table.
 */

/** Unique violation: a concurrent upload took the same filter ID. */
const uniqueViolation = '23505'
const maxAttempts = 5

/**
 * Stores a filter (or finds an identical one) and returns its ID.
 *
 * @example
 * const filterId = await createFilter(db, '@alice:example.org', { room: { timeline: { limit: 10 } } }) // '0'
 */
export async function createFilter(db: Kysely<Database>, userId: string, filter: Record<string, unknown>): Promise<string> {
  const json = JSON.stringify(filter)
  for (let attempt = 1; ; attempt++) {
    const same = await db
      .selectFrom('user_filters')
      .select('filter_id')
      .where('user_id', '=', userId)
      .where('filter_json', '=', sql<string>`${json}::jsonb`)
      .orderBy('filter_id')
      .executeTakeFirst()
    if (same) return same.filter_id.toString()
    try {
      const row = await db
        .insertInto('user_filters')
        .columns(['user_id', 'filter_id', 'filter_json'])
        .expression(
          db
            .selectFrom('user_filters')
            .select([
              sql<string>`${userId}::text`.as('user_id'),
              sql<bigint>`coalesce(max(filter_id) + 1, 0)`.as('filter_id'),
              sql<string>`${json}::jsonb`.as('filter_json'),
            ])
            .where('user_id', '=', userId),
        )
        .returning('filter_id')
        .executeTakeFirstOrThrow()
      return row.filter_id.toString()
    } catch (err) {
      if ((err as { code?: string }).code !== uniqueViolation || attempt >= maxAttempts) throw err
    }
  }
}

/**
 * A user's filter by ID; undefined when the user has no such filter (including IDs that are not
 * decimal numbers).
 *
 * @example
 * await getFilter(db, '@alice:example.org', '0') // { room: { timeline: { limit: 10 } } }
 */
export async function getFilter(db: Kysely<Database>, userId: string, filterId: string): Promise<Record<string, unknown> | undefined> {
  if (!/^\d{1,18}$/.test(filterId)) return undefined
  const row = await db
    .selectFrom('user_filters')
    .select('filter_json')
    .where('user_id', '=', userId)
    .where('filter_id', '=', BigInt(filterId))
    .executeTakeFirst()
  return row?.filter_json as Record<string, unknown> | undefined
}
