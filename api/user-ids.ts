import { MatrixError } from './errors.js'

/**
 * Local user IDs: `@<localpart>:<server_name>`. Registration accepts localparts of
 * `[a-z0-9._=/+-]` (the spec's historical user ID grammar, lowercase), not starting with `_`
 * (reserved for bridges), not all digits (Synapse reserves those for generated IDs), and the whole
 * ID at most 255 characters.
 */

const localpartPattern = /^[a-z0-9._=/+-]+$/
export const maxUserIdLength = 255

/**
 * Throws 400 `M_INVALID_USERNAME` when `localpart` may not be registered on `serverName`.
 *
 * @example
 * checkLocalpart('alice', 'example.org') // ok
 * checkLocalpart('Alice', 'example.org') // throws M_INVALID_USERNAME
 */
export function checkLocalpart(localpart: string, serverName: string): void {
  const invalid = (why: string) => new MatrixError(400, 'M_INVALID_USERNAME', why)
  if (localpart === '') throw invalid('User ID cannot be empty')
  if (!localpartPattern.test(localpart)) throw invalid('User ID can only contain characters a-z, 0-9, or "=_-./+"')
  if (localpart.startsWith('_')) throw invalid('User ID may not begin with "_"')
  if (/^\d+$/.test(localpart)) throw invalid('Numeric user IDs are reserved')
  if (userIdOf(localpart, serverName).length > maxUserIdLength) throw invalid(`User ID may not be longer than ${maxUserIdLength} characters`)
}

/** `@localpart:serverName`. */
export function userIdOf(localpart: string, serverName: string): string {
  return `@${localpart}:${serverName}`
}

/**
 * The local user ID a login names: a localpart or a full user ID, case-insensitively (stored IDs
 * are lowercase). Undefined for a user of another server or a malformed ID.
 *
 * @example
 * loginUserId('Alice', 'example.org') // '@alice:example.org'
 * loginUserId('@alice:other.org', 'example.org') // undefined
 */
export function loginUserId(user: string, serverName: string): string | undefined {
  if (!user.startsWith('@')) return userIdOf(user.toLowerCase(), serverName)
  const colon = user.indexOf(':')
  if (colon === -1 || user.slice(colon + 1) !== serverName) return undefined
  return userIdOf(user.slice(1, colon).toLowerCase(), serverName)
}
