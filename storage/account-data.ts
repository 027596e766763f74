import { sql, type Kysely, type Transaction } from 'kysely'
import { lockOrderedStream, streamPosition } from './ordered-streams.js'
import type { Database } from './schema.js'

/**
 * Account data: per-user JSON documents keyed by type, global (`room_id = ''`) or per room, and
 * the `account_data` stream that orders changes for /sync. Push rules (storage/push-rules.ts)
 * are part of the same stream (sync shows them as the global `m.push_rules` account data).
 *
 * Ordering guarantee: every writer of the stream (here and in push-rules.ts) allocates its
 * stream ID from `account_data_stream_seq` under the stream's lock (storage/ordered-streams.ts),
 * so the highest committed stream ID (`accountDataPosition`) is a position below which nothing
 * can still appear.
 */

/** A global or per-room account data document. */
export interface AccountDataEntry {
  readonly type: string
  readonly content: Record<string, unknown>
}

/** Account data changes of one user, as sync shows them. */
export interface AccountDataChanges {
  readonly global: AccountDataEntry[]
  /** Room ID → that room's changed entries. */
  readonly rooms: Map<string, AccountDataEntry[]>
}

/**
 * Takes the stream lock and allocates the next stream ID; MUST run inside a transaction that
 * then writes a row with that ID (see the ordering guarantee above).
 *
 * @example
 * await db.transaction().execute(async (trx) => {
 *   const streamId = await allocateAccountDataStreamId(trx)
 *   await trx.insertInto('account_data').values({ ..., stream_id: streamId }).execute()
 * })
 */
export async function allocateAccountDataStreamId(trx: Transaction<Database>): Promise<bigint> {
  await lockOrderedStream(trx, 'account_data')
  const { rows } = await sql<{ id: bigint }>`SELECT nextval('account_data_stream_seq') AS id`.execute(trx)
  const id = rows[0]?.id
  if (id === undefined) throw new Error('nextval returned no row')
  return id
}

/**
 * Stores one document (replacing the previous one of the same user, room and type) and returns
 * its stream ID. `roomId` absent or '' means global.
 *
 * @example
 * await setAccountData(db, { userId: '@alice:example.org', type: 'm.direct', content: {} }) // 7n
 * await setAccountData(db, { userId, roomId: '!r:example.org', type: 'm.tag', content: { tags: {} } })
 */
export async function setAccountData(
  db: Kysely<Database>,
  entry: { userId: string; roomId?: string; type: string; content: Record<string, unknown> },
): Promise<bigint> {
  return db.transaction().execute(async (trx) => {
    const streamId = await allocateAccountDataStreamId(trx)
    await writeAccountData(trx, entry, entry.content, streamId)
    return streamId
  })
}

async function writeAccountData(trx: Transaction<Database>, key: { userId: string; roomId?: string; type: string }, content: Record<string, unknown>, streamId: bigint): Promise<void> {
  const json = JSON.stringify(content)
  await trx
    .insertInto('account_data')
    .values({ user_id: key.userId, room_id: key.roomId ?? '', type: key.type, content: json, stream_id: streamId })
    .onConflict((oc) => oc.columns(['user_id', 'room_id', 'type']).doUpdateSet({ content: json, stream_id: streamId }))
    .execute()
}

/**
 * Replaces one document with what `change` makes of the current one (undefined when absent), in
 * one transaction under the stream lock, so that concurrent changes of the same document (two
 * tags added at once) both land. Returns the stored content.
 *
 * @example
 * await updateAccountData(db, { userId, roomId, type: 'm.tag' }, (current) => ({ tags: { ...(current?.tags as object), 'm.favourite': {} } }))
 */
export async function updateAccountData(
  db: Kysely<Database>,
  key: { userId: string; roomId?: string; type: string },
  change: (current: Record<string, unknown> | undefined) => Record<string, unknown>,
): Promise<Record<string, unknown>> {
  return db.transaction().execute(async (trx) => {
    const streamId = await allocateAccountDataStreamId(trx)
    const next = change(await getAccountData(trx, key.userId, key.type, key.roomId))
    await writeAccountData(trx, key, next, streamId)
    return next
  })
}

/**
 * One document, or undefined when the user has none of that type (there).
 *
 * @example
 * await getAccountData(db, '@alice:example.org', 'm.direct') // { '@bob:example.org': ['!r:…'] }
 */
export async function getAccountData(
  db: Kysely<Database>,
  userId: string,
  type: string,
  roomId = '',
): Promise<Record<string, unknown> | undefined> {
  const row = await db
    .selectFrom('account_data')
    .select('content')
    .where('user_id', '=', userId)
    .where('room_id', '=', roomId)
    .where('type', '=', type)
    .executeTakeFirst()
  return row?.content as Record<string, unknown> | undefined
}

/**
 * The stream's position (storage/ordered-streams.ts): the highest committed stream ID of account
 * data or push rules. Safe as an upper bound for readers.
 *
 * @example
 * const upTo = await accountDataPosition(db)
 * const changes = await accountDataChanges(db, userId, { after: since, upTo })
 */
export function accountDataPosition(db: Kysely<Database>): Promise<bigint> {
  return streamPosition(db, 'account_data')
}

/**
 * A user's documents whose stream ID is in `(after, upTo]`: everything when `after` is absent
 * (initial sync). Push rules appear as the global `m.push_rules` entry when they changed in the
 * range (initial sync: only once stored, so callers wanting them always use getPushRules).
 *
 * @example
 * const { global, rooms } = await accountDataChanges(db, userId, { after: 5n, upTo: 9n })
 */
export async function accountDataChanges(
  db: Kysely<Database>,
  userId: string,
  range: { after?: bigint; upTo: bigint },
): Promise<AccountDataChanges> {
  // Nothing can lie in an empty range: most syncs, since account data rarely changes.
  if (range.after !== undefined && range.after >= range.upTo) return { global: [], rooms: new Map() }
  let query = db
    .selectFrom('account_data')
    .select(['room_id', 'type', 'content'])
    .where('user_id', '=', userId)
    .where('stream_id', '<=', range.upTo)
  let rulesQuery = db.selectFrom('push_rules').select('rules').where('user_id', '=', userId).where('stream_id', '<=', range.upTo)
  if (range.after !== undefined) {
    query = query.where('stream_id', '>', range.after)
    rulesQuery = rulesQuery.where('stream_id', '>', range.after)
  }
  const [rows, rules] = await Promise.all([query.orderBy('stream_id').execute(), rulesQuery.executeTakeFirst()])
  const global: AccountDataEntry[] = []
  const rooms = new Map<string, AccountDataEntry[]>()
  for (const row of rows) {
    const entry = { type: row.type, content: row.content as Record<string, unknown> }
    if (row.room_id === '') {
      global.push(entry)
      continue
    }
    const list = rooms.get(row.room_id)
    if (list) list.push(entry)
    else rooms.set(row.room_id, [entry])
  }
  if (rules) global.push({ type: 'm.push_rules', content: rules.rules as Record<string, unknown> })
  return { global, rooms }
}
