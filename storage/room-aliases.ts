import type { Kysely } from 'kysely'
import { StorageError } from './errors.js'
import type { Database } from './schema.js'

/**
 * Room aliases of this server's room directory (`room_aliases`, migrations/0002): each alias
 * (`#localpart:server`) names exactly one room; a room has any number of aliases. An alias row
 * references its `rooms` row, so an alias can only be created for a room that exists (the
 * persister inserts the row with the room's m.room.create event).
 *
 * Aliases are not room state: the room's m.room.canonical_alias event is separate and is not
 * changed here.
 */

/** Longest alias accepted (the spec's limit on room aliases, in characters). */
export const maxRoomAliasLength = 255

/** Where an alias points, and who created it (may delete it). */
export interface AliasMapping {
  readonly roomId: string
  readonly creator: string
}

/** Outcome of `createAlias`: a taken alias is an expected outcome, not an error. */
export type CreateAliasResult = 'created' | 'taken'

/** SQLSTATE of a foreign key violation (the room does not exist). */
const foreignKeyViolation = '23503'

/**
 * Maps `alias` to `roomId`, unless the alias is already taken (by any room).
 *
 * @throws StorageError `ES_ROOM_NOT_FOUND` when the room does not exist.
 * @example
 * await createAlias(db, '#lobby:example.org', '!abc:example.org', '@alice:example.org') // 'created'
 * await createAlias(db, '#lobby:example.org', '!other:example.org', '@bob:example.org') // 'taken'
 */
export async function createAlias(db: Kysely<Database>, alias: string, roomId: string, creator: string): Promise<CreateAliasResult> {
  try {
    const inserted = await db
      .insertInto('room_aliases')
      .values({ room_alias: alias, room_id: roomId, creator })
      .onConflict((oc) => oc.column('room_alias').doNothing())
      .returning('room_alias')
      .executeTakeFirst()
    return inserted === undefined ? 'taken' : 'created'
  } catch (err) {
    if ((err as { code?: unknown }).code === foreignKeyViolation) {
      throw new StorageError('ES_ROOM_NOT_FOUND', `room ${roomId} does not exist`, { cause: err })
    }
    throw err
  }
}

/**
 * The room `alias` points to, or `undefined`.
 *
 * @example
 * await getAlias(db, '#lobby:example.org') // { roomId: '!abc:example.org', creator: '@alice:example.org' }
 */
export async function getAlias(db: Kysely<Database>, alias: string): Promise<AliasMapping | undefined> {
  const row = await db.selectFrom('room_aliases').select(['room_id', 'creator']).where('room_alias', '=', alias).executeTakeFirst()
  return row === undefined ? undefined : { roomId: row.room_id, creator: row.creator }
}

/**
 * Removes `alias`; false when it did not exist.
 *
 * @example
 * await deleteAlias(db, '#lobby:example.org') // true
 */
export async function deleteAlias(db: Kysely<Database>, alias: string): Promise<boolean> {
  const result = await db.deleteFrom('room_aliases').where('room_alias', '=', alias).executeTakeFirst()
  return result.numDeletedRows > 0n
}

/**
 * The aliases of `roomId`, sorted.
 *
 * @example
 * await roomAliases(db, '!abc:example.org') // ['#lobby:example.org', '#main:example.org']
 */
export async function roomAliases(db: Kysely<Database>, roomId: string): Promise<string[]> {
  const rows = await db.selectFrom('room_aliases').select('room_alias').where('room_id', '=', roomId).orderBy('room_alias').execute()
  return rows.map((row) => row.room_alias)
}

/**
 * Points every alias of `fromRoomId` at `toRoomId` (a room upgrade), keeping their creators.
 *
 * @returns the aliases moved, sorted.
 * @example
 * await moveAliases(db, '!old:example.org', '!new:example.org') // ['#lobby:example.org']
 */
export async function moveAliases(db: Kysely<Database>, fromRoomId: string, toRoomId: string): Promise<string[]> {
  const rows = await db.updateTable('room_aliases').set({ room_id: toRoomId }).where('room_id', '=', fromRoomId).returning('room_alias').execute()
  return rows.map((row) => row.room_alias).sort()
}
