import { createPrivateKey, createPublicKey, randomBytes, randomInt, sign, verify } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import sodium from 'sodium-native'
import { StorageError } from '../errors.js'
import { canonicalJsonBytes } from './canonical-json.js'
import { redactedView } from './redaction.js'
import type { JsonObject } from './redaction.js'

/**
 * A server's ed25519 signing key, parsed from the text of a Synapse-style signing key file.
 * Holds the private key only as a `KeyObject`, which neither `JSON.stringify` nor `util.inspect`
 * reveals.
 *
 * @example
 * const key: SigningKey = parseSigningKey(await readFile(config.signingKeyPath, 'utf8'))
 * log.info({ keyId: key.keyId, publicKey: key.publicKeyBase64 }, 'signing key loaded')
 */
export interface SigningKey {
  readonly algorithm: 'ed25519'
  /** The key ID's version part: one or more of `[A-Za-z0-9_]`. */
  readonly version: string
  /** `ed25519:<version>`: the key under `signatures[serverName]`. */
  readonly keyId: string
  readonly privateKey: KeyObject
  /** The 32-byte public key as unpadded standard base64, as published in `/_matrix/key/v2/server`. */
  readonly publicKeyBase64: string
}

/**
 * `signatures` of a signed JSON object: server name → key ID → unpadded base64 signature.
 *
 * @example
 * const signatures: Signatures = { 'example.org': { 'ed25519:a_AbCd': 'K8280/U9…' } }
 */
export type Signatures = Record<string, Record<string, string>>

const versionPattern = /^[A-Za-z0-9_]+$/
const seedPattern = /^[A-Za-z0-9+/]{43}=?$/
const signaturePattern = /^[A-Za-z0-9+/]{86}(==)?$/
const publicKeyPattern = seedPattern
/** DER prefix of a PKCS#8 ed25519 private key; the 32-byte seed follows it (RFC 8410). */
const pkcs8Ed25519Prefix = Buffer.from('302e020100300506032b657004220420', 'hex')
/**
 * libsodium's 64-byte secret keys (seed ‖ public key), in guarded memory, by parsed key. Signing
 * through libsodium takes about 14 µs against 21 µs for `crypto.sign` (the persister signs every
 * event); both give the same RFC 8032 signature. Kept out of the `SigningKey` object so nothing
 * that prints the key can reach the secret.
 */
const sodiumSecretKeys = new WeakMap<SigningKey, Buffer>()

const versionAlphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'

/**
 * Generates a new signing key as the one-line text of a Synapse signing key file:
 * `ed25519 <version> <unpadded base64 32-byte seed>\n`. Without `version`, uses Synapse's form
 * `a_` + 4 random alphanumerics.
 *
 * @throws StorageError `ES_CONFIG_INVALID` when `version` is not one or more of `[A-Za-z0-9_]`.
 *
 * @example
 * generateSigningKey('a_AbCd') // 'ed25519 a_AbCd 5kVx…(43 characters)\n'
 * parseSigningKey(generateSigningKey()).keyId // e.g. 'ed25519:a_x9Qe'
 */
export function generateSigningKey(version?: string): string {
  const chosen = version ?? `a_${Array.from({ length: 4 }, () => versionAlphabet[randomInt(versionAlphabet.length)]).join('')}`
  if (!versionPattern.test(chosen)) {
    throw new StorageError('ES_CONFIG_INVALID', `signing key version ${JSON.stringify(chosen)} must match [A-Za-z0-9_]+`)
  }
  return `ed25519 ${chosen} ${randomBytes(32).toString('base64').replace(/=+$/, '')}\n`
}

/**
 * Parses the text of a Synapse signing key file holding exactly one key:
 * `ed25519 <version> <base64 seed>`, fields separated by whitespace, surrounding blank lines
 * ignored. The seed is 32 bytes of standard base64, unpadded (padding is tolerated).
 *
 * @throws StorageError `ES_CONFIG_INVALID` naming what is wrong (field count, algorithm, version,
 * seed shape). The message never contains the seed or the text of the seed field.
 *
 * @example
 * const key = parseSigningKey('ed25519 a_AbCd YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1')
 * key.keyId // 'ed25519:a_AbCd'
 * key.publicKeyBase64 // 'XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI'
 */
export function parseSigningKey(text: string): SigningKey {
  const lines = text.split(/\r?\n/).map((line) => line.trim()).filter((line) => line !== '')
  if (lines.length !== 1) {
    throw invalidKey(`expected exactly one key line, found ${lines.length}`)
  }
  const fields = lines[0]!.split(/\s+/)
  if (fields.length !== 3) {
    throw invalidKey(`expected 3 fields "ed25519 <version> <base64 seed>", found ${fields.length}`)
  }
  const [algorithm, version, seedText] = fields as [string, string, string]
  if (algorithm !== 'ed25519') {
    throw invalidKey(`unsupported algorithm ${JSON.stringify(algorithm.slice(0, 32))}; only ed25519 is supported`)
  }
  if (!versionPattern.test(version)) {
    throw invalidKey(`key version ${JSON.stringify(version.slice(0, 64))} must match [A-Za-z0-9_]+`)
  }
  if (!seedPattern.test(seedText)) {
    throw invalidKey(`the seed must be 32 bytes of standard base64 (43 characters, unpadded); got ${seedText.length} characters`)
  }
  const privateKey = createPrivateKey({
    key: Buffer.concat([pkcs8Ed25519Prefix, Buffer.from(seedText, 'base64')]),
    format: 'der',
    type: 'pkcs8',
  })
  const x = createPublicKey(privateKey).export({ format: 'jwk' }).x
  if (x === undefined) throw invalidKey('the seed did not yield an ed25519 public key')
  const key: SigningKey = Object.freeze({
    algorithm: 'ed25519',
    version,
    keyId: `ed25519:${version}`,
    privateKey,
    publicKeyBase64: Buffer.from(x, 'base64url').toString('base64').replace(/=+$/, ''),
  })
  const secretKey = sodium.sodium_malloc(sodium.crypto_sign_SECRETKEYBYTES)
  sodium.crypto_sign_seed_keypair(Buffer.alloc(sodium.crypto_sign_PUBLICKEYBYTES), secretKey, Buffer.from(seedText, 'base64'))
  sodiumSecretKeys.set(key, secretKey)
  return key
}

/**
 * Signs a JSON object (Matrix "Signing JSON"): removes `signatures` and `unsigned`, signs the
 * canonical JSON of the rest with ed25519, and returns a new object equal to `obj` (its
 * `unsigned` included) whose `signatures[serverName][key.keyId]` holds the unpadded base64
 * signature. Signatures already present are kept (a previous one under the same server and key
 * ID is replaced). `obj` is not mutated.
 *
 * @throws StorageError `ES_BAD_EVENT` when `obj` is not canonical-JSON encodable or its
 * `signatures` is not an object of objects.
 *
 * @example
 * signJson({}, 'domain', key)
 * // { signatures: { domain: { 'ed25519:1': 'K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ' } } }
 */
export function signJson<T extends JsonObject>(obj: Readonly<T>, serverName: string, key: SigningKey): T & { signatures: Signatures } {
  const { signatures: existing, unsigned: _unsigned, ...signed } = obj
  const signature = signBytes(canonicalJsonBytes(signed), key)
  const signatures = copySignatures(existing)
  setOwn(signatures, serverName, { ...signatures[serverName], [key.keyId]: signature })
  return { ...obj, signatures }
}

/**
 * The ed25519 signature of `bytes` with `key`, as unpadded standard base64: what `signJson` puts
 * in `signatures`, for a caller that already holds the canonical bytes (see buildPdu).
 *
 * @example
 * signBytes(canonicalJsonBytes({ a: 1 }), key) // 86 characters of base64
 */
export function signBytes(bytes: Uint8Array, key: SigningKey): string {
  const secretKey = sodiumSecretKeys.get(key)
  if (secretKey === undefined) return sign(null, bytes, key.privateKey).toString('base64').slice(0, 86)
  const signature = Buffer.allocUnsafe(sodium.crypto_sign_BYTES)
  const message = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  sodium.crypto_sign_detached(signature, message, secretKey)
  // 64 bytes are 88 base64 characters, the last two padding.
  return signature.toString('base64').slice(0, 86)
}

/**
 * Checks the signature of `serverName` with `keyId` on a JSON object signed by `signJson`
 * (Matrix "Checking for a signature"). Returns false, never throws, when the signature is
 * missing, malformed or wrong, when `publicKeyBase64` is not a 32-byte base64 key, or when the
 * object is not canonical-JSON encodable.
 *
 * @example
 * verifyJsonSignature(signJson(obj, 'domain', key), 'domain', key.keyId, key.publicKeyBase64) // true
 */
export function verifyJsonSignature(obj: Readonly<JsonObject>, serverName: string, keyId: string, publicKeyBase64: string): boolean {
  const { signatures, unsigned: _unsigned, ...signed } = obj
  const signature = lookupSignature(signatures, serverName, keyId)
  if (signature === undefined || !signaturePattern.test(signature) || !publicKeyPattern.test(publicKeyBase64)) {
    return false
  }
  let bytes: Buffer
  try {
    bytes = canonicalJsonBytes(signed)
  } catch {
    return false
  }
  try {
    const publicKey = createPublicKey({
      key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(publicKeyBase64, 'base64').toString('base64url') },
      format: 'jwk',
    })
    return verify(null, bytes, publicKey, Buffer.from(signature, 'base64'))
  } catch {
    return false
  }
}

/**
 * Signs an event (Matrix "Signing events"): signs the redacted event with `signJson` and
 * attaches the resulting `signatures` to the full event, so the signature survives redaction.
 * The caller MUST set `hashes.sha256` (see `computeContentHash`) first: the redacted form keeps
 * `hashes`, and that is how the signature commits to the unredacted content. `pdu` is not mutated.
 *
 * @throws StorageError `ES_BAD_EVENT` as `signJson`.
 *
 * @example
 * const pdu = { ...unsignedPdu, hashes: { sha256: computeContentHash(unsignedPdu) } }
 * const signed = signEvent(pdu, 'example.org', key)
 * verifyEventSignature(signed, 'example.org', key.keyId, key.publicKeyBase64) // true
 */
export function signEvent<T extends JsonObject>(pdu: Readonly<T>, serverName: string, key: SigningKey): T & { signatures: Signatures } {
  const { signatures } = signJson(redactedView(pdu), serverName, key)
  return { ...pdu, signatures }
}

/**
 * Checks an event signature made by `signEvent`: `verifyJsonSignature` over the redacted event.
 * It proves the redacted form only; compare `hashes.sha256` with `computeContentHash` to check
 * the full content.
 *
 * @example
 * verifyEventSignature(signEvent(pdu, 'example.org', key), 'example.org', key.keyId, key.publicKeyBase64) // true
 */
export function verifyEventSignature(pdu: Readonly<JsonObject>, serverName: string, keyId: string, publicKeyBase64: string): boolean {
  return verifyJsonSignature(redactedView(pdu), serverName, keyId, publicKeyBase64)
}

function copySignatures(existing: unknown): Signatures {
  if (existing === undefined) return {}
  if (!isObject(existing)) throw new StorageError('ES_BAD_EVENT', 'signatures must be an object')
  const copy: Signatures = {}
  for (const [server, byKey] of Object.entries(existing)) {
    if (!isObject(byKey)) throw new StorageError('ES_BAD_EVENT', `signatures of ${JSON.stringify(server)} must be an object`)
    setOwn(copy, server, { ...(byKey as Record<string, string>) })
  }
  return copy
}

function lookupSignature(signatures: unknown, serverName: string, keyId: string): string | undefined {
  if (!isObject(signatures) || !Object.hasOwn(signatures, serverName)) return undefined
  const byKey = signatures[serverName]
  if (!isObject(byKey) || !Object.hasOwn(byKey, keyId)) return undefined
  const signature = byKey[keyId]
  return typeof signature === 'string' ? signature : undefined
}

/** Assignment would treat a `__proto__` key as the prototype; this always makes a data property. */
function setOwn<V>(target: Record<string, V>, key: string, value: V): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true })
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function invalidKey(problem: string): StorageError {
  return new StorageError('ES_CONFIG_INVALID', `invalid signing key: ${problem}`)
}
