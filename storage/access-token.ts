import { createHash, randomInt } from 'node:crypto'
import { crc32 } from 'node:zlib'

/**
 * Access tokens in Synapse's shape: `syt_<base64url localpart>_<random>_<check>`.
 * - `<base64url localpart>`: unpadded base64url of the user's localpart, so a proxy can route one
 *   user's requests to one worker without a database lookup (api/routing/user-key.ts relies on it);
 * - `<random>`: 20 alphanumeric characters from a CSPRNG (about 119 bits);
 * - `<check>`: CRC-32 of everything before it, base62, 6 characters: catches typos and garbage
 *   without a database round trip. It is not a secret and proves nothing.
 * `<random>` and `<check>` are alphanumeric only (the routing key depends on that).
 *
 * The database stores only the SHA-256 of the whole token (`access_tokens.token_hash`).
 */

const base62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'
const randomLength = 20
const checkLength = 6

function base62Encode(value: number, minWidth: number): string {
  let out = ''
  let n = value
  while (n > 0) {
    out = base62[n % 62] + out
    n = Math.floor(n / 62)
  }
  return out.padStart(minWidth, '0')
}

function tokenCheck(prefix: string): string {
  return base62Encode(crc32(prefix), checkLength)
}

/** `length` characters drawn uniformly from [0-9A-Za-z] with a CSPRNG. */
export function randomAlphanumeric(length: number): string {
  let out = ''
  for (let i = 0; i < length; i++) out += base62[randomInt(62)]
  return out
}

/**
 * A new access token for `localpart`.
 *
 * @example
 * generateAccessToken('alice') // 'syt_YWxpY2U_Jq0nWc5m8xEKr7t3dV2a_1bX9Qz'
 */
export function generateAccessToken(localpart: string): string {
  const prefix = `syt_${Buffer.from(localpart, 'utf8').toString('base64url')}_${randomAlphanumeric(randomLength)}`
  return `${prefix}_${tokenCheck(prefix)}`
}

/**
 * False only for a `syt_` token whose check part does not match (a typo or a forgery attempt
 * that can be refused without a database lookup). Tokens of other shapes pass: the database
 * decides.
 *
 * @example
 * passesTokenCheck(generateAccessToken('bob')) // true
 * passesTokenCheck('syt_Ym9i_aaaaaaaaaaaaaaaaaaaa_000000') // false
 */
export function passesTokenCheck(token: string): boolean {
  if (!token.startsWith('syt_')) return true
  const cut = token.lastIndexOf('_')
  if (cut <= 4) return false
  return token.slice(cut + 1) === tokenCheck(token.slice(0, cut))
}

/**
 * The stored form of a token: its SHA-256 (a token has ~119 random bits, so a fast hash is
 * enough; a database leak yields no usable tokens).
 *
 * @example
 * await db.selectFrom('access_tokens').selectAll().where('token_hash', '=', hashAccessToken(token)).executeTakeFirst()
 */
export function hashAccessToken(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest()
}
