import { createPrivateKey, sign } from 'node:crypto'
import { inspect } from 'node:util'
import { expect } from 'chai'
import fc from 'fast-check'
import { isStorageError } from '../../../../storage/errors.js'
import { redactEvent } from '../../../../storage/events/redaction.js'
import type { JsonObject } from '../../../../storage/events/redaction.js'
import {
  generateSigningKey,
  parseSigningKey,
  signEvent,
  signBytes,
  signJson,
  verifyEventSignature,
  verifyJsonSignature,
} from '../../../../storage/events/signing.js'

/** The spec appendix "Cryptographic test vectors" key: seed, its public key, server `domain`, key `ed25519:1`. */
const specSeed = 'YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1'
const specPublicKey = 'XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI'
const specKey = parseSigningKey(`ed25519 1 ${specSeed}`)

/** Signs `text` with the spec key through a route independent of signing.ts (a JWK import). */
function independentSign(text: string): string {
  const toUrl = (b64: string): string => Buffer.from(b64, 'base64').toString('base64url')
  const key = createPrivateKey({ key: { kty: 'OKP', crv: 'Ed25519', d: toUrl(specSeed), x: toUrl(specPublicKey) }, format: 'jwk' })
  return sign(null, Buffer.from(text, 'utf8'), key).toString('base64').replace(/=+$/, '')
}

function expectConfigInvalid(text: string, messagePart: string): void {
  let thrown: unknown
  try {
    parseSigningKey(text)
  } catch (err) {
    thrown = err
  }
  expect(isStorageError(thrown, 'ES_CONFIG_INVALID'), `${JSON.stringify(text)} should be rejected`).to.equal(true)
  const message = (thrown as Error).message
  expect(message).to.include(messagePart)
  expect(message).to.not.include(specSeed.slice(0, 10))
}

const minimalEvent: JsonObject = {
  room_id: '!x:domain',
  sender: '@a:domain',
  origin: 'domain',
  origin_server_ts: 1000000,
  signatures: {},
  hashes: { sha256: '5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos' },
  type: 'X',
  content: {},
  prev_events: [],
  auth_events: [],
  depth: 3,
  unsigned: { age_ts: 1000000 },
}

describe('signing', () => {
  describe('parseSigningKey', () => {
    it('should derive the spec appendix public key from its seed', () => {
      expect(specKey.publicKeyBase64).to.equal(specPublicKey)
      expect(specKey).to.include({ algorithm: 'ed25519', version: '1', keyId: 'ed25519:1' })
    })

    it('should accept a trailing newline, CRLF, surrounding blank lines, extra spaces and a padded seed', () => {
      for (const text of [
        `ed25519 a_AbCd ${specSeed}\n`,
        `\r\n  ed25519\ta_AbCd   ${specSeed}  \r\n\r\n`,
        `ed25519 a_AbCd ${specSeed}=`,
      ]) {
        const key = parseSigningKey(text)
        expect(key.keyId).to.equal('ed25519:a_AbCd')
        expect(key.publicKeyBase64).to.equal(specPublicKey)
      }
    })

    it('should reject malformed key text with a clear message that never contains the seed', () => {
      expectConfigInvalid('', 'found 0')
      expectConfigInvalid(`ed25519 a ${specSeed}\ned25519 b ${specSeed}`, 'exactly one key line, found 2')
      expectConfigInvalid(`ed25519 ${specSeed}`, 'expected 3 fields')
      expectConfigInvalid(`ed25519 a_1 ${specSeed} extra`, 'found 4')
      expectConfigInvalid(`curve25519 a_1 ${specSeed}`, 'only ed25519')
      expectConfigInvalid(`ed25519 a-1 ${specSeed}`, '[A-Za-z0-9_]+')
      expectConfigInvalid(`ed25519 a:1 ${specSeed}`, '[A-Za-z0-9_]+')
      expectConfigInvalid(`ed25519 a_1 ${specSeed.slice(0, 42)}`, 'got 42 characters')
      expectConfigInvalid(`ed25519 a_1 ${specSeed}AAAA`, 'got 47 characters')
      expectConfigInvalid(`ed25519 a_1 ${specSeed.slice(0, 42)}_`, 'standard base64')
    })

    it('should not reveal the private key through JSON or inspection', () => {
      const seedBytes = Buffer.from(specSeed, 'base64')
      for (const text of [JSON.stringify(specKey), inspect(specKey, { depth: 5, showHidden: true })]) {
        expect(text).to.not.include(specSeed.slice(0, 12))
        expect(text).to.not.include(seedBytes.toString('hex').slice(0, 16))
      }
    })
  })

  describe('generateSigningKey', () => {
    it('should write a Synapse key line with a default a_XXXX version', () => {
      expect(generateSigningKey()).to.match(/^ed25519 a_[A-Za-z0-9]{4} [A-Za-z0-9+/]{43}\n$/)
    })

    it('should use a given version and parse back into a working key', () => {
      const key = parseSigningKey(generateSigningKey('v2_key'))
      expect(key.keyId).to.equal('ed25519:v2_key')
      const signed = signJson({ hello: 'world' }, 'example.org', key)
      expect(verifyJsonSignature(signed, 'example.org', key.keyId, key.publicKeyBase64)).to.equal(true)
    })

    it('should produce a different seed each time', () => {
      const seeds = new Set(Array.from({ length: 5 }, () => generateSigningKey('x').split(' ')[2]))
      expect(seeds.size).to.equal(5)
    })

    it('should reject an invalid version', () => {
      for (const version of ['', 'a b', 'a:b', 'ä']) {
        expect(() => generateSigningKey(version)).to.throw().that.satisfies((err: unknown) => isStorageError(err, 'ES_CONFIG_INVALID'))
      }
    })
  })

  describe('signJson', () => {
    it('should reproduce the spec appendix signatures of {} and {"one":1,"two":"Two"}', () => {
      expect(signJson({}, 'domain', specKey)).to.deep.equal({
        signatures: { domain: { 'ed25519:1': 'K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ' } },
      })
      expect(signJson({ one: 1, two: 'Two' }, 'domain', specKey).signatures).to.deep.equal({
        domain: { 'ed25519:1': 'KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw' },
      })
    })

    it('should sign any bytes exactly as an independent crypto.sign does, with parsed and fresh keys (libsodium path, property)', () => {
      const fresh = parseSigningKey(generateSigningKey('p'))
      fc.assert(
        fc.property(fc.string({ unit: 'binary', maxLength: 2000 }), (text) => {
          expect(signBytes(Buffer.from(text, 'utf8'), specKey)).to.equal(independentSign(text))
          const bytes = new TextEncoder().encode(text)
          expect(signBytes(bytes, fresh)).to.equal(sign(null, bytes, fresh.privateKey).toString('base64').replace(/=+$/, ''))
        }),
      )
    })

    it('should sign without signatures and unsigned, keep unsigned in the result and not mutate the input', () => {
      const input = { one: 1, two: 'Two', unsigned: { age: 5 }, signatures: { other: { 'ed25519:z': 'zz' } } }
      const copy = structuredClone(input)
      const signed = signJson(input, 'domain', specKey)
      expect(input).to.deep.equal(copy)
      expect(signed.unsigned).to.deep.equal({ age: 5 })
      expect(signed.signatures['domain']?.['ed25519:1']).to.equal(independentSign('{"one":1,"two":"Two"}'))
    })

    it('should keep existing signatures of other servers and keys and replace its own', () => {
      const input = { a: 1, signatures: { other: { 'ed25519:z': 'zz' }, domain: { 'ed25519:old': 'oo', 'ed25519:1': 'stale' } } }
      const signed = signJson(input, 'domain', specKey)
      expect(signed.signatures).to.deep.equal({
        other: { 'ed25519:z': 'zz' },
        domain: { 'ed25519:old': 'oo', 'ed25519:1': independentSign('{"a":1}') },
      })
    })

    it('should reject signatures that are not an object of objects', () => {
      for (const signatures of ['x', { domain: 'x' }, [1]]) {
        expect(() => signJson({ signatures }, 'domain', specKey)).to.throw().that.satisfies((err: unknown) => isStorageError(err, 'ES_BAD_EVENT'))
      }
    })
  })

  describe('verifyJsonSignature', () => {
    const signed = signJson({ one: 1, two: 'Two', unsigned: { x: 1 } }, 'domain', specKey)

    it('should accept a valid signature, also after unsigned changes', () => {
      expect(verifyJsonSignature(signed, 'domain', 'ed25519:1', specPublicKey)).to.equal(true)
      expect(verifyJsonSignature({ ...signed, unsigned: { y: 2 } }, 'domain', 'ed25519:1', specPublicKey)).to.equal(true)
      expect(verifyJsonSignature({ ...signed, unsigned: undefined }, 'domain', 'ed25519:1', specPublicKey)).to.equal(true)
    })

    const otherKey = parseSigningKey(`ed25519 1 ${'A'.repeat(43)}`)
    const failures: [name: string, obj: JsonObject, server: string, keyId: string, publicKey: string][] = [
      ['a changed field', { ...signed, two: 'three' }, 'domain', 'ed25519:1', specPublicKey],
      ['an added field', { ...signed, three: 3 }, 'domain', 'ed25519:1', specPublicKey],
      ['another server name', signed, 'elsewhere', 'ed25519:1', specPublicKey],
      ['another key ID', signed, 'domain', 'ed25519:2', specPublicKey],
      ['another public key', signed, 'domain', 'ed25519:1', otherKey.publicKeyBase64],
      ['a malformed public key', signed, 'domain', 'ed25519:1', 'not base64!'],
      ['no signatures', { one: 1, two: 'Two' }, 'domain', 'ed25519:1', specPublicKey],
      ['a truncated signature', { ...signed, signatures: { domain: { 'ed25519:1': 'K8280' } } }, 'domain', 'ed25519:1', specPublicKey],
      ['a non-string signature', { ...signed, signatures: { domain: { 'ed25519:1': 5 } } }, 'domain', 'ed25519:1', specPublicKey],
      ['a body without canonical form', { ...signed, f: 0.5 }, 'domain', 'ed25519:1', specPublicKey],
    ]
    for (const [name, obj, server, keyId, publicKey] of failures) {
      it(`should return false for ${name}`, () => {
        expect(verifyJsonSignature(obj, server, keyId, publicKey)).to.equal(false)
      })
    }

    it('should verify what signJson signs and reject any changed string field (property)', () => {
      fc.assert(
        fc.property(fc.dictionary(fc.string(), fc.string(), { minKeys: 1, maxKeys: 4 }), fc.string(), (obj, suffix) => {
          fc.pre(suffix !== '')
          const result = signJson(obj, 'example.org', specKey)
          expect(verifyJsonSignature(result, 'example.org', 'ed25519:1', specPublicKey)).to.equal(true)
          const key = Object.keys(obj)[0]!
          expect(verifyJsonSignature({ ...result, [key]: `${obj[key]}${suffix}` }, 'example.org', 'ed25519:1', specPublicKey)).to.equal(false)
        }),
        { numRuns: 30 },
      )
    })
  })

  describe('signEvent', () => {
    it('should reproduce the spec appendix event signature when signing the pre-v11 redacted form (checks the independent route)', () => {
      const preV11Redacted =
        '{"auth_events":[],"content":{},"depth":3,"hashes":{"sha256":"5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},' +
        '"origin":"domain","origin_server_ts":1000000,"prev_events":[],"room_id":"!x:domain","sender":"@a:domain","type":"X"}'
      expect(independentSign(preV11Redacted)).to.equal('KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg')
    })

    it('should sign the v11 redacted form, which drops origin', () => {
      const v11Redacted =
        '{"auth_events":[],"content":{},"depth":3,"hashes":{"sha256":"5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},' +
        '"origin_server_ts":1000000,"prev_events":[],"room_id":"!x:domain","sender":"@a:domain","type":"X"}'
      const signed = signEvent(minimalEvent, 'domain', specKey)
      expect(signed.signatures).to.deep.equal({ domain: { 'ed25519:1': independentSign(v11Redacted) } })
    })

    it('should attach the signatures to the full event and not mutate it', () => {
      const event = { ...minimalEvent, content: { body: 'hello' } }
      const copy = structuredClone(event)
      const signed = signEvent(event, 'domain', specKey)
      expect(event).to.deep.equal(copy)
      expect({ ...signed, signatures: {} }).to.deep.equal(event)
    })

    it('should verify on the full and on the redacted event', () => {
      const signed = signEvent({ ...minimalEvent, content: { body: 'hello' } }, 'domain', specKey)
      expect(verifyEventSignature(signed, 'domain', 'ed25519:1', specPublicKey)).to.equal(true)
      expect(verifyEventSignature(redactEvent(signed), 'domain', 'ed25519:1', specPublicKey)).to.equal(true)
      expect(verifyJsonSignature(signed, 'domain', 'ed25519:1', specPublicKey)).to.equal(false)
    })

    it('should fail verification when a protected field or the content hash changes', () => {
      const signed = signEvent(minimalEvent, 'domain', specKey)
      for (const change of [{ sender: '@b:domain' }, { depth: 4 }, { hashes: { sha256: 'other' } }, { type: 'Y' }]) {
        expect(verifyEventSignature({ ...signed, ...change }, 'domain', 'ed25519:1', specPublicKey), JSON.stringify(change)).to.equal(false)
      }
    })

    it('should keep earlier signatures of other servers', () => {
      const event = { ...minimalEvent, signatures: { 'other.org': { 'ed25519:o': 'sig' } } }
      const signed = signEvent(event, 'domain', specKey)
      expect(Object.keys(signed.signatures).sort()).to.deep.equal(['domain', 'other.org'])
      expect(signed.signatures['other.org']).to.deep.equal({ 'ed25519:o': 'sig' })
    })
  })
})
