import { expect } from 'chai'
import { buildPdu } from '../../../persisters/build-pdu.js'
import { validatePersistRequest } from '../../../persisters/new-event.js'
import type { NewEvent } from '../../../persisters/new-event.js'
import { encodeCanonicalJson } from '../../../storage/events/canonical-json.js'
import { computeContentHash, computeEventId } from '../../../storage/events/event-hashes.js'
import { redactEvent } from '../../../storage/events/redaction.js'
import { generateSigningKey, parseSigningKey, verifyEventSignature } from '../../../storage/events/signing.js'
import { isStorageError } from '../../../storage/errors.js'

const key = parseSigningKey(generateSigningKey('unit'))
const fields = {
  roomId: '!r:hs',
  type: 'm.room.message',
  sender: '@a:hs',
  content: { body: 'hi', msgtype: 'm.text' },
  originServerTs: 1_700_000_000_000,
  prevEvents: ['$prev'],
  authEvents: ['$create', '$pl', '$member'],
  depth: 7,
}

describe('buildPdu', () => {
  it('should produce a signed v11 PDU whose ID is its reference hash and JSON is canonical', () => {
    const { eventId, pdu, json } = buildPdu(fields, 'hs', key)
    expect(eventId).to.match(/^\$[A-Za-z0-9_-]{43}$/)
    const { signatures: _signatures, ...unsigned } = pdu
    expect(computeEventId(unsigned)).to.equal(eventId)
    expect((pdu['hashes'] as { sha256: string }).sha256).to.equal(computeContentHash(pdu))
    expect(verifyEventSignature(pdu, 'hs', key.keyId, key.publicKeyBase64)).to.equal(true)
    expect(json).to.equal(encodeCanonicalJson(pdu))
    expect(pdu).to.not.have.property('event_id')
    expect(pdu).to.not.have.property('state_key')
    expect(pdu).to.include({ depth: 7, room_id: '!r:hs', origin_server_ts: fields.originServerTs })
  })

  it('should keep the event ID when the event is redacted but change it with the content', () => {
    const { eventId, pdu } = buildPdu(fields, 'hs', key)
    const { signatures: _s, ...redacted } = redactEvent(pdu)
    expect(computeEventId(redacted)).to.equal(eventId)
    expect(buildPdu({ ...fields, content: { body: 'other' } }, 'hs', key).eventId).to.not.equal(eventId)
    expect(buildPdu({ ...fields, stateKey: '' }, 'hs', key).pdu).to.have.property('state_key', '')
  })

  it('should refuse content that has no canonical JSON form', () => {
    try {
      buildPdu({ ...fields, content: { n: 1.5 } }, 'hs', key)
      expect.fail('expected a throw')
    } catch (err) {
      expect(isStorageError(err, 'ES_BAD_EVENT')).to.equal(true)
    }
  })
})

describe('validatePersistRequest', () => {
  const ok: NewEvent = { type: 'm.room.message', sender: '@a:hs', content: {} }
  const cases: [string, unknown][] = [
    ['empty request ID', { requestId: '', roomId: '!r:hs', events: [ok] }],
    ['room ID without !', { requestId: 'r', roomId: 'r:hs', events: [ok] }],
    ['no events', { requestId: 'r', roomId: '!r:hs', events: [] }],
    ['content not an object', { requestId: 'r', roomId: '!r:hs', events: [ok, { ...ok, content: [] }] }],
    ['txn without txnId', { requestId: 'r', roomId: '!r:hs', events: [{ ...ok, txn: { deviceId: 'D' } }] }],
    ['fractional timestamp', { requestId: 'r', roomId: '!r:hs', events: [{ ...ok, origin_server_ts: 1.5 }] }],
  ]
  for (const [name, request] of cases) {
    it(`should refuse a request with ${name}`, () => {
      try {
        validatePersistRequest(request as Parameters<typeof validatePersistRequest>[0])
        expect.fail('expected a throw')
      } catch (err) {
        expect(isStorageError(err, 'ES_BAD_EVENT'), String(err)).to.equal(true)
      }
    })
  }

  it('should name the index of the bad event', () => {
    expect(() => validatePersistRequest({ requestId: 'r', roomId: '!r:hs', events: [ok, { ...ok, type: '' }] })).to.throw(/^event 1: type/)
  })

  it('should accept a well-formed request', () => {
    validatePersistRequest({ requestId: 'r', roomId: '!r:hs', events: [ok, { ...ok, state_key: '', txn: { deviceId: 'D', txnId: 't' } }] })
  })
})
