import { randomBytes } from 'node:crypto'
import type { Kysely } from 'kysely'
import { getAlias } from '../storage/room-aliases.js'
import type { Database } from '../storage/schema.js'
import { invalidParam, notFound } from './errors.js'

/**
 * Syntax checks for the identifiers room routes take from clients (spec appendix "Identifier
 * grammar"): `@localpart:server` users, `!opaque:server` rooms, `#alias:server` aliases, each
 * at most 255 characters. The localpart ends at the first `:`; the server name may carry a port.
 */

export const maxIdentifierLength = 255

const serverNamePattern = '(?:[A-Za-z0-9.-]+|\\[[0-9A-Fa-f:.]+\\])(?::[0-9]{1,5})?'
const userIdPattern = new RegExp(`^@[^:\\s]+:${serverNamePattern}$`)
const roomIdPattern = new RegExp(`^![^:\\s]+:${serverNamePattern}$`)
const aliasPattern = new RegExp(`^#[^:\\s]+:${serverNamePattern}$`)

/** Whether `value` is a syntactically valid user ID. */
export function isUserId(value: string): boolean {
  return value.length <= maxIdentifierLength && userIdPattern.test(value)
}

/** Whether `value` is a syntactically valid room ID. */
export function isRoomId(value: string): boolean {
  return value.length <= maxIdentifierLength && roomIdPattern.test(value)
}

/** Whether `value` is a syntactically valid room alias. */
export function isRoomAlias(value: string): boolean {
  return value.length <= maxIdentifierLength && aliasPattern.test(value)
}

/** The server name of a user ID, room ID or alias (after the first `:`). */
export function serverNameOf(id: string): string {
  return id.slice(id.indexOf(':') + 1)
}

/**
 * `roomId` when it is a room ID, else 400 `M_INVALID_PARAM`.
 *
 * @example
 * checkRoomId('!abc:example.org') // '!abc:example.org'
 * checkRoomId('abc') // throws M_INVALID_PARAM
 */
export function checkRoomId(roomId: string): string {
  if (!isRoomId(roomId)) throw invalidParam(`${JSON.stringify(roomId.slice(0, 300))} is not a room ID`)
  return roomId
}

/**
 * `userId` when it is a user ID, else 400 `M_INVALID_PARAM`.
 *
 * @example
 * checkUserId('@bob:example.org') // '@bob:example.org'
 */
export function checkUserId(userId: string): string {
  if (!isUserId(userId)) throw invalidParam(`${JSON.stringify(userId.slice(0, 300))} is not a user ID`)
  return userId
}

/**
 * `alias` when it is a room alias, else 400 `M_INVALID_PARAM`.
 *
 * @example
 * checkRoomAlias('#lobby:example.org') // '#lobby:example.org'
 */
export function checkRoomAlias(alias: string): string {
  if (!isRoomAlias(alias)) throw invalidParam(`${JSON.stringify(alias.slice(0, 300))} is not a room alias`)
  return alias
}

/**
 * The room a `{roomIdOrAlias}` path parameter names: a room ID as it is (400 when malformed), an
 * alias looked up in the directory (400 when malformed, 404 when it names no room). Whether the
 * room exists is the caller's question.
 *
 * @example
 * await roomIdOrAlias(db, '#lobby:example.org') // '!abc:example.org'
 */
export async function roomIdOrAlias(db: Kysely<Database>, target: string): Promise<string> {
  if (!target.startsWith('#')) return checkRoomId(target)
  const mapping = await getAlias(db, checkRoomAlias(target))
  if (mapping === undefined) throw notFound(`Room alias ${target} not found`)
  return mapping.roomId
}

/**
 * A fresh room ID: 18 random base64url characters (108 bits) on `serverName`.
 *
 * @example
 * generateRoomId('example.org') // '!Xq3v…:example.org'
 */
export function generateRoomId(serverName: string): string {
  return `!${randomBytes(14).toString('base64url').slice(0, 18)}:${serverName}`
}
