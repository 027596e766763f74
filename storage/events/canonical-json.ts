import { StorageError } from '../errors.js'

/**
 * Largest integer canonical JSON may carry: 2^53 − 1.
 *
 * @example
 * encodeCanonicalJson(maxCanonicalInteger) // '9007199254740991'; one more throws
 */
export const maxCanonicalInteger = Number.MAX_SAFE_INTEGER

/**
 * Smallest integer canonical JSON may carry: −(2^53) + 1.
 *
 * @example
 * encodeCanonicalJson(minCanonicalInteger) // '-9007199254740991'; one less throws
 */
export const minCanonicalInteger = Number.MIN_SAFE_INTEGER

const maxCanonicalBigInt = BigInt(maxCanonicalInteger)
const minCanonicalBigInt = BigInt(minCanonicalInteger)

/**
 * Encodes a value as Matrix canonical JSON (spec appendix "Canonical JSON"): the one byte string
 * that content hashes, reference hashes (event IDs) and signatures are computed over.
 *
 * Guarantees, for every input it accepts:
 * - object keys are sorted by Unicode code point (which equals UTF-8 byte order), not by UTF-16
 *   code unit as `Array.prototype.sort` would;
 * - no insignificant whitespace;
 * - strings use the shortest escapes: only `"`, `\` and U+0000–U+001F are escaped, with the short
 *   forms `\b \f \n \r \t` where they exist and `\u00xx` (lowercase hex) otherwise; every other
 *   character, U+007F and non-ASCII included, is written as itself;
 * - numbers are integers in [−(2^53)+1, 2^53−1], written in plain decimal (`-0` is written `0`);
 *   a `bigint` in that range is written the same way.
 *
 * Accepted inputs: `null`, booleans, strings, numbers and bigints as above, arrays, and plain
 * objects (prototype `Object.prototype` or `null`; only own enumerable string keys are encoded).
 *
 * @throws StorageError `ES_BAD_EVENT` for anything else: floats, NaN, ±Infinity, out-of-range
 * integers, `undefined` (also as an object property value or array element), functions, symbols,
 * non-plain objects (Date, Map, Buffer, class instances), strings or keys holding a lone surrogate
 * (they have no UTF-8 encoding), and cyclic structures. The message names the offending path.
 *
 * @example
 * encodeCanonicalJson({ b: 2, a: [true, null, 'é\n'] }) // '{"a":[true,null,"é\\n"],"b":2}'
 * encodeCanonicalJson({ '\u{1F600}': 1, '\uFF01': 2 }) // '{"！":2,"😀":1}' (U+FF01 < U+1F600)
 * encodeCanonicalJson({ n: 1.5 }) // throws StorageError ES_BAD_EVENT
 */
export function encodeCanonicalJson(value: unknown): string {
  return encodeValue(value, ['$'], new Set())
}

/**
 * Encoded top-level members of objects encoded with `encodeCanonicalObject`, by key: a member
 * whose value is the same reference as before is not encoded again.
 */
export type CanonicalMemberCache = Map<string, { readonly value: unknown; readonly member: string }[]>

/**
 * `encodeCanonicalJson` of a plain object, reusing the encoding of every top-level member whose
 * value is the very same reference as in an object encoded before with the same `cache`. For
 * encoding several views of one event (content hash, redacted form, stored JSON) where only a
 * few members differ. The values must not be mutated between the calls.
 *
 * @throws StorageError `ES_BAD_EVENT` as `encodeCanonicalJson`.
 * @example
 * const cache: CanonicalMemberCache = new Map()
 * encodeCanonicalObject(event, cache)
 * encodeCanonicalObject({ ...event, hashes }, cache) // only `hashes` is encoded
 */
export function encodeCanonicalObject(record: Readonly<Record<string, unknown>>, cache: CanonicalMemberCache): string {
  return encodeContainer(record, ['$'], new Set(), cache)
}

/**
 * The UTF-8 bytes of `encodeCanonicalJson(value)`: what is hashed and signed.
 *
 * @throws StorageError `ES_BAD_EVENT` as `encodeCanonicalJson`.
 *
 * @example
 * createHash('sha256').update(canonicalJsonBytes(pdu)).digest()
 * canonicalJsonBytes({ k: 'é' }).length // 10: '{"k":"' + 2 bytes + '"}'
 */
export function canonicalJsonBytes(value: unknown): Buffer {
  return Buffer.from(encodeCanonicalJson(value), 'utf8')
}

/**
 * Orders strings by Unicode code point. Equal to UTF-16 code unit order except when a surrogate
 * pair (U+10000 and above) meets a BMP character in U+E000–U+FFFF.
 *
 * @example
 * ['\u{1F600}', '\uFF01'].sort(compareCodePoints) // ['\uFF01', '\u{1F600}']
 */
export function compareCodePoints(a: string, b: string): number {
  const length = Math.min(a.length, b.length)
  for (let i = 0; i < length; i++) {
    const x = a.charCodeAt(i)
    const y = b.charCodeAt(i)
    if (x === y) continue
    // First difference: code unit order is code point order unless exactly one side is a
    // surrogate and the other is at or above U+E000 (the surrogate stands for a larger code point).
    if (isSurrogate(x) && y >= 0xe000 && !isSurrogate(y)) return 1
    if (isSurrogate(y) && x >= 0xe000 && !isSurrogate(x)) return -1
    return x - y
  }
  return a.length - b.length
}

function isSurrogate(unit: number): boolean {
  return unit >= 0xd800 && unit <= 0xdfff
}

// `path` is a stack of segments ('$', '.key', '[3]') joined only when reporting a problem: building
// a path string per member cost as much as encoding the member.
function encodeValue(value: unknown, path: string[], ancestors: Set<object>): string {
  switch (typeof value) {
    case 'string':
      return encodeString(value, path)
    case 'boolean':
      return value ? 'true' : 'false'
    case 'number':
      if (!Number.isSafeInteger(value)) {
        throw bad(path, `${String(value)} is not an integer in [-(2^53)+1, 2^53-1]`)
      }
      return String(value) // String(-0) is '0'
    case 'bigint':
      if (value < minCanonicalBigInt || value > maxCanonicalBigInt) {
        throw bad(path, `${value} is outside [-(2^53)+1, 2^53-1]`)
      }
      return value.toString()
    case 'object':
      if (value === null) return 'null'
      return encodeContainer(value, path, ancestors)
    default:
      throw bad(path, `a ${typeof value} has no JSON form`)
  }
}

/** An array or plain object; `cache` (top level of `encodeCanonicalObject` only) reuses members. */
function encodeContainer(value: object, path: string[], ancestors: Set<object>, cache?: CanonicalMemberCache): string {
  if (ancestors.has(value)) throw bad(path, 'the structure is cyclic')
  ancestors.add(value)
  let text: string
  if (Array.isArray(value)) {
    text = '['
    for (let i = 0; i < value.length; i++) {
      path.push(`[${i}]`)
      text += (i === 0 ? '' : ',') + encodeValue(value[i], path, ancestors)
      path.pop()
    }
    text += ']'
  } else {
    const proto: unknown = Object.getPrototypeOf(value)
    if (proto !== Object.prototype && proto !== null) {
      throw bad(path, `a ${value.constructor?.name ?? 'non-plain'} object has no canonical JSON form`)
    }
    const record = value as Record<string, unknown>
    const keys = Object.keys(record).sort(compareCodePoints)
    text = '{'
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i] as string
      const member = memberOf(key, record[key], path, ancestors, cache)
      text += (i === 0 ? '' : ',') + member
    }
    text += '}'
  }
  ancestors.delete(value)
  return text
}

/** `"key":value`, from `cache` when it holds this very value for `key`. */
function memberOf(key: string, value: unknown, path: string[], ancestors: Set<object>, cache: CanonicalMemberCache | undefined): string {
  const seen = cache?.get(key)
  const cached = seen?.find((entry) => Object.is(entry.value, value))
  if (cached !== undefined) return cached.member
  path.push(`.${key.length > 64 ? `${key.slice(0, 64)}…` : key}`)
  const member = `${encodeString(key, path)}:${encodeValue(value, path, ancestors)}`
  path.pop()
  if (cache !== undefined) {
    if (seen === undefined) cache.set(key, [{ value, member }])
    else seen.push({ value, member })
  }
  return member
}

function encodeString(value: string, path: readonly string[]): string {
  if (!value.isWellFormed()) throw bad(path, 'a string holds a lone surrogate, which has no UTF-8 form')
  // For well-formed strings JSON.stringify (ES2019 "well-formed JSON.stringify") emits exactly the
  // canonical escapes: `\"`, `\\`, `\b \f \n \r \t`, `\u00xx` lowercase for other controls, and
  // every other character verbatim. test/unit/storage/events/canonical-json.spec.ts pins this.
  return JSON.stringify(value)
}

function bad(path: readonly string[], problem: string): StorageError {
  return new StorageError('ES_BAD_EVENT', `not encodable as canonical JSON at ${path.join('')}: ${problem}`)
}
