import { sql, type Kysely } from 'kysely'
import type { Database } from './schema.js'

/**
 * Registration tokens (migration 0022): what lets someone sign up when registration requires a
 * token. A token is valid while it has not expired (`expiry_time`, ms) and has uses left
 * (`uses_allowed` NULL: unlimited). Registering consumes one use in the same transaction that
 * creates the account (`consumeRegistrationToken`), so concurrent sign-ups never use a token
 * more often than it allows.
 */

type Db = Kysely<Database>

/** A token as Synapse's admin API shows it. */
export interface RegistrationToken {
  readonly token: string
  readonly uses_allowed: number | null
  readonly pending: number
  readonly completed: number
  readonly expiry_time: number | null
}

const columns = ['token', 'uses_allowed', 'pending', 'completed', 'expiry_time'] as const

function toToken(row: { token: string; uses_allowed: number | null; pending: number; completed: number; expiry_time: bigint | string | number | null }): RegistrationToken {
  return { ...row, expiry_time: row.expiry_time === null ? null : Number(row.expiry_time) }
}

/** SQL: the token row is usable at `now`. */
const usableAt = (now: number) =>
  sql<boolean>`(uses_allowed IS NULL OR pending + completed < uses_allowed) AND (expiry_time IS NULL OR expiry_time > ${now}::int8)`

/**
 * Creates a token; 'exists' when that token is taken.
 *
 * @example
 * await createRegistrationToken(db, { token: 'abcd', uses_allowed: 5, expiry_time: null }) // 'created'
 */
export async function createRegistrationToken(db: Db, token: { token: string; uses_allowed: number | null; expiry_time: number | null }): Promise<'created' | 'exists'> {
  const row = await db.insertInto('registration_tokens').values(token).onConflict((oc) => oc.column('token').doNothing()).returning('token').executeTakeFirst()
  return row === undefined ? 'exists' : 'created'
}

/**
 * Every token (or only the valid ones at `now`, or only the others), in token order.
 *
 * @example
 * await registrationTokens(db, { valid: true, now: Date.now() })
 */
export async function registrationTokens(db: Db, filter: { valid?: boolean; now: number }): Promise<RegistrationToken[]> {
  const rows = await db
    .selectFrom('registration_tokens')
    .select(columns)
    .$if(filter.valid !== undefined, (qb) => qb.where(filter.valid ? usableAt(filter.now) : sql<boolean>`NOT (${usableAt(filter.now)})`))
    .orderBy('token')
    .execute()
  return rows.map(toToken)
}

/** One token, or undefined. */
export async function registrationToken(db: Db, token: string): Promise<RegistrationToken | undefined> {
  const row = await db.selectFrom('registration_tokens').select(columns).where('token', '=', token).executeTakeFirst()
  return row === undefined ? undefined : toToken(row)
}

/**
 * Changes a token's allowed uses or expiry (absent: unchanged; null: unlimited, never); the
 * token after, or undefined when there is none.
 */
export async function updateRegistrationToken(db: Db, token: string, change: { uses_allowed?: number | null; expiry_time?: number | null }): Promise<RegistrationToken | undefined> {
  if (change.uses_allowed === undefined && change.expiry_time === undefined) return registrationToken(db, token)
  const row = await db.updateTable('registration_tokens').set(change).where('token', '=', token).returning(columns).executeTakeFirst()
  return row === undefined ? undefined : toToken(row)
}

/** Deletes a token; false when there was none. */
export async function deleteRegistrationToken(db: Db, token: string): Promise<boolean> {
  const result = await db.deleteFrom('registration_tokens').where('token', '=', token).executeTakeFirst()
  return result.numDeletedRows > 0n
}

/**
 * Whether `token` may be used to register at `now`.
 *
 * @example
 * await registrationTokenValid(db, 'abcd', Date.now()) // true
 */
export async function registrationTokenValid(db: Db, token: string, now: number): Promise<boolean> {
  const row = await db.selectFrom('registration_tokens').select('token').where('token', '=', token).where(usableAt(now)).executeTakeFirst()
  return row !== undefined
}

/**
 * Uses `token` once, if it is valid at `now`; run it in the transaction that creates the
 * account, so that a failed registration uses nothing. False: invalid (unknown, expired or used
 * up), nothing changed.
 *
 * @example
 * await db.transaction().execute(async (trx) => { if (!(await consumeRegistrationToken(trx, token, now))) throw … })
 */
export async function consumeRegistrationToken(db: Db, token: string, now: number): Promise<boolean> {
  const row = await db.updateTable('registration_tokens').set({ completed: sql`completed + 1` }).where('token', '=', token).where(usableAt(now)).returning('token').executeTakeFirst()
  return row !== undefined
}
