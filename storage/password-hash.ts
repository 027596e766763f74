import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto'

/**
 * Password hashing with scrypt (node:crypto, run on libuv's thread pool, never on the event loop).
 * Stored form: `scrypt$<N>$<r>$<p>$<base64 salt>$<base64 hash>`, so the cost can be raised later
 * without invalidating existing hashes. Passwords are NFKC-normalized first (as Synapse does), so
 * the same password typed on different keyboards verifies.
 */

/** N = 2^15, r = 8, p = 1: 32 MiB and about 70 ms per hash on the reference machine. */
export const defaultScryptCost = { N: 2 ** 15, r: 8, p: 1 } as const
const saltBytes = 16
const keyBytes = 32
/** Stored parameters above these are refused (a corrupt row must not exhaust memory). */
const maxCost = { N: 2 ** 20, r: 32, p: 16 }

function scryptAsync(password: string, salt: Buffer, keyLength: number, options: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password, salt, keyLength, options, (err, key) => (err ? reject(err) : resolve(key)))
  })
}

function optionsFor(cost: { N: number; r: number; p: number }): ScryptOptions {
  return { N: cost.N, r: cost.r, p: cost.p, maxmem: 256 * cost.N * cost.r * cost.p + 1024 * 1024 }
}

/**
 * Hashes a password with a fresh random salt.
 *
 * @example
 * const stored = await hashPassword('correct horse') // 'scrypt$32768$8$1$…$…'
 */
export async function hashPassword(password: string, cost: { N: number; r: number; p: number } = defaultScryptCost): Promise<string> {
  const salt = randomBytes(saltBytes)
  const key = await scryptAsync(password.normalize('NFKC'), salt, keyBytes, optionsFor(cost))
  return ['scrypt', cost.N, cost.r, cost.p, salt.toString('base64'), key.toString('base64')].join('$')
}

/**
 * Whether `password` matches a stored hash, compared in constant time. A malformed stored hash
 * never matches.
 *
 * @example
 * await verifyPassword('correct horse', stored) // true
 */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const parts = stored.split('$')
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false
  const [N, r, p] = parts.slice(1, 4).map(Number) as [number, number, number]
  const valid = (v: number, max: number) => Number.isInteger(v) && v >= 1 && v <= max
  if (!valid(N, maxCost.N) || !valid(r, maxCost.r) || !valid(p, maxCost.p)) return false
  const salt = Buffer.from(parts[4] ?? '', 'base64')
  const expected = Buffer.from(parts[5] ?? '', 'base64')
  if (expected.length === 0) return false
  let actual: Buffer
  try {
    actual = await scryptAsync(password.normalize('NFKC'), salt, expected.length, optionsFor({ N, r, p }))
  } catch {
    return false
  }
  return timingSafeEqual(actual, expected)
}

let dummyHash: Promise<string> | undefined

/**
 * Spends the same time as a real verification and fails; used when the user does not exist, so
 * response times do not reveal which user names are registered.
 */
export async function verifyAgainstDummy(password: string): Promise<false> {
  dummyHash ??= hashPassword(randomBytes(16).toString('hex'))
  await verifyPassword(password, await dummyHash)
  return false
}
