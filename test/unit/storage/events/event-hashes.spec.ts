import { createHash } from 'node:crypto'
import { expect } from 'chai'
import fc from 'fast-check'
import { isStorageError } from '../../../../storage/errors.js'
import { computeContentHash, computeEventId, computeReferenceHash } from '../../../../storage/events/event-hashes.js'
import { redactEvent } from '../../../../storage/events/redaction.js'
import type { JsonObject } from '../../../../storage/events/redaction.js'

/** A room v11 message PDU before hashing and signing. */
const message: JsonObject = {
  type: 'm.room.message',
  room_id: '!r:example.org',
  sender: '@alice:example.org',
  origin_server_ts: 1_700_000_000_000,
  depth: 3,
  prev_events: ['$p'],
  auth_events: ['$a'],
  content: { msgtype: 'm.text', body: 'hi' },
  unsigned: { age_ts: 5 },
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest()
}

function hashed(pdu: JsonObject): JsonObject {
  return { ...pdu, hashes: { sha256: computeContentHash(pdu) } }
}

describe('computeContentHash', () => {
  it('should match the spec appendix vector for the minimal event', () => {
    const minimal = {
      room_id: '!x:domain', sender: '@a:domain', origin: 'domain', origin_server_ts: 1000000, signatures: {}, hashes: {},
      type: 'X', content: {}, prev_events: [], auth_events: [], depth: 3, unsigned: { age_ts: 1000000 },
    }
    expect(computeContentHash(minimal)).to.equal('5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos')
  })

  it('should match the spec appendix vector for the message event', () => {
    const specMessage = {
      content: { body: 'Here is the message content' }, event_id: '$0:domain', origin: 'domain', origin_server_ts: 1000000,
      type: 'm.room.message', room_id: '!r:domain', sender: '@u:domain', signatures: {}, unsigned: { age_ts: 1000000 },
    }
    expect(computeContentHash(specMessage)).to.equal('onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g')
  })

  it('should equal SHA-256 of the hand-written canonical JSON without unsigned, signatures and hashes', () => {
    const canonical =
      '{"auth_events":["$a"],"content":{"body":"hi","msgtype":"m.text"},"depth":3,"origin_server_ts":1700000000000,' +
      '"prev_events":["$p"],"room_id":"!r:example.org","sender":"@alice:example.org","type":"m.room.message"}'
    const expected = sha256(canonical).toString('base64').replace(/=+$/, '')
    const pdu = { ...message, hashes: { sha256: 'old' }, signatures: { 'example.org': { 'ed25519:x': 'sig' } } }
    expect(computeContentHash(pdu)).to.equal(expected)
    expect(expected).to.match(/^[A-Za-z0-9+/]{43}$/)
  })

  it('should ignore unsigned, signatures and hashes but cover every other key (property)', () => {
    fc.assert(
      fc.property(fc.string(), fc.jsonValue(), fc.string(), (body, noise, signature) => {
        const pdu = { ...message, content: { msgtype: 'm.text', body } }
        const hash = computeContentHash(pdu)
        expect(computeContentHash({ ...pdu, unsigned: { noise }, signatures: { s: { k: signature } }, hashes: { x: 'y' } })).to.equal(hash)
        expect(computeContentHash({ ...pdu, content: { msgtype: 'm.text', body: `${body}!` } })).to.not.equal(hash)
      }),
    )
  })

  it('should throw ES_BAD_EVENT for content without a canonical form', () => {
    expect(() => computeContentHash({ ...message, content: { ratio: 0.5 } }))
      .to.throw()
      .that.satisfies((err: unknown) => isStorageError(err, 'ES_BAD_EVENT'))
  })
})

describe('computeReferenceHash and computeEventId', () => {
  it('should hash the hand-written canonical JSON of the redacted event without signatures and unsigned', () => {
    const pdu = {
      ...message,
      hashes: { sha256: 'HASH' },
      signatures: { 'example.org': { 'ed25519:x': 'sig' } },
      origin: 'example.org',
      age_ts: 99,
    }
    const canonical =
      '{"auth_events":["$a"],"content":{},"depth":3,"hashes":{"sha256":"HASH"},"origin_server_ts":1700000000000,' +
      '"prev_events":["$p"],"room_id":"!r:example.org","sender":"@alice:example.org","type":"m.room.message"}'
    const digest = sha256(canonical)
    expect(computeReferenceHash(pdu).equals(digest)).to.equal(true)
    expect(computeEventId(pdu)).to.equal(`$${digest.toString('base64url')}`)
  })

  it('should produce a $ followed by 43 URL-safe base64 characters', () => {
    fc.assert(
      fc.property(fc.string(), fc.nat(), (body, depth) => {
        expect(computeEventId(hashed({ ...message, depth, content: { body } }))).to.match(/^\$[A-Za-z0-9_-]{43}$/)
      }),
    )
  })

  it('should keep the ID when the event is redacted (property)', () => {
    fc.assert(
      fc.property(fc.string(), fc.constantFrom('m.room.message', 'm.room.member', 'm.room.power_levels'), (body, type) => {
        const pdu = hashed({ ...message, type, content: { body, membership: 'join', ban: 50 } })
        expect(computeEventId(redactEvent(pdu))).to.equal(computeEventId(pdu))
      }),
    )
  })

  it('should not change the ID when only redactable content changes and hashes stay the same', () => {
    const pdu = { ...message, hashes: { sha256: 'fixed' } }
    const id = computeEventId(pdu)
    expect(computeEventId({ ...pdu, content: { body: 'edited', msgtype: 'm.notice' } })).to.equal(id)
    expect(computeEventId({ ...pdu, unsigned: { age: 1 }, signatures: { x: { y: 'z' } } })).to.equal(id)
  })

  it('should change the ID when content changes in a hashed PDU, because hashes.sha256 commits to it', () => {
    expect(computeEventId(hashed({ ...message, content: { body: 'edited' } }))).to.not.equal(computeEventId(hashed(message)))
  })

  const nonRedactableChanges: [name: string, change: JsonObject][] = [
    ['type', { type: 'm.room.notice' }],
    ['sender', { sender: '@bob:example.org' }],
    ['room_id', { room_id: '!other:example.org' }],
    ['depth', { depth: 4 }],
    ['prev_events', { prev_events: ['$q'] }],
    ['auth_events', { auth_events: [] }],
    ['origin_server_ts', { origin_server_ts: 1 }],
    ['state_key', { state_key: '' }],
    ['hashes', { hashes: { sha256: 'other' } }],
  ]
  for (const [name, change] of nonRedactableChanges) {
    it(`should change the ID when ${name} changes`, () => {
      const pdu = { ...message, hashes: { sha256: 'fixed' } }
      expect(computeEventId({ ...pdu, ...change })).to.not.equal(computeEventId(pdu))
    })
  }

  it('should change the ID when kept content changes (membership of m.room.member)', () => {
    const member = { ...message, type: 'm.room.member', state_key: '@alice:example.org', hashes: { sha256: 'fixed' } }
    expect(computeEventId({ ...member, content: { membership: 'join' } })).to.not.equal(
      computeEventId({ ...member, content: { membership: 'leave' } }),
    )
  })

  it('should reject a PDU that carries event_id', () => {
    expect(() => computeEventId({ ...message, event_id: '$x' }))
      .to.throw(/event_id/)
      .that.satisfies((err: unknown) => isStorageError(err, 'ES_BAD_EVENT'))
  })
})
