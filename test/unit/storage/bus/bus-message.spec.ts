import { expect } from 'chai'
import fc from 'fast-check'
import { isStorageError } from '../../../../storage/errors.js'
import {
  decodeBusMessage,
  encodeBusMessage,
  isValidRoomId,
  maxBusMessageBytes,
  type BusMessage,
} from '../../../../storage/bus/bus-message.js'

const nameArb = fc.stringMatching(/^[\x21-\x7e]{1,40}$/)
const positionArb = fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n })
const roomArb = fc
  .tuple(fc.string({ unit: 'grapheme', minLength: 1, maxLength: 20 }), fc.domain())
  .map(([local, domain]) => `!${local}:${domain}`)
  .filter(isValidRoomId)

const positionMessageArb: fc.Arbitrary<BusMessage> = fc
  .record({
    stream: nameArb,
    writer: nameArb,
    a: positionArb,
    b: positionArb,
    rooms: fc.option(fc.array(roomArb, { maxLength: 8 }), { nil: undefined }),
  })
  .map(({ stream, writer, a, b, rooms }) => ({
    type: 'POSITION' as const,
    stream,
    writer,
    prev: a < b ? a : b,
    next: a < b ? b : a,
    ...(rooms === undefined ? {} : { rooms }),
  }))
const messageArb = fc.oneof(positionMessageArb, nameArb.map((from): BusMessage => ({ type: 'REPLICATE', from })))

function expectInvalidParam(message: BusMessage, pattern: RegExp): void {
  let thrown: unknown
  try {
    encodeBusMessage(message)
  } catch (err) {
    thrown = err
  }
  expect(isStorageError(thrown, 'ES_INVALID_PARAM'), String(thrown)).to.equal(true)
  expect((thrown as Error).message).to.match(pattern)
}

describe('bus-message', () => {
  describe('encodeBusMessage', () => {
    it('should produce the documented wire lines', () => {
      const position: BusMessage = {
        type: 'POSITION',
        stream: 'events',
        writer: 'persister1',
        prev: 100n,
        next: 105n,
        rooms: ['!a:hs', '!b:hs'],
      }
      expect(encodeBusMessage(position)).to.deep.equal({ line: 'POSITION events persister1 100 105 !a:hs,!b:hs' })
      expect(encodeBusMessage({ ...position, rooms: [] }).line).to.equal('POSITION events persister1 100 105 -')
      const { rooms: _rooms, ...withoutHint } = position
      expect(encodeBusMessage(withoutHint).line).to.equal('POSITION events persister1 100 105')
      expect(encodeBusMessage({ type: 'REPLICATE', from: 'api1' }).line).to.equal('REPLICATE api1')
    })

    it('should drop a hint holding an invalid room ID and say why', () => {
      for (const room of ['!a b:hs', '!a,b:hs', '', '-', '!a\n:hs', '!a\u0000:hs', '!\ud800:hs']) {
        const encoded = encodeBusMessage({ type: 'POSITION', stream: 's', writer: 'w', prev: 1n, next: 2n, rooms: ['!ok:hs', room] })
        expect(encoded, JSON.stringify(room)).to.deep.equal({ line: 'POSITION s w 1 2', droppedHint: 'invalid-room' })
      }
    })

    it('should drop a hint that would exceed the size limit, and keep one that fits exactly', () => {
      const base = 'POSITION events persister1 1 2 '
      const room = (i: number, width: number): string => `!${String(i).padStart(width, '0')}:hs`
      // 700 rooms of 10 bytes plus commas: far over the limit.
      const large = Array.from({ length: 700 }, (_, i) => room(i, 6))
      const dropped = encodeBusMessage({ type: 'POSITION', stream: 'events', writer: 'persister1', prev: 1n, next: 2n, rooms: large })
      expect(dropped).to.deep.equal({ line: 'POSITION events persister1 1 2', droppedHint: 'too-large' })

      // A single room that brings the line to exactly the limit (multi-byte characters count as bytes).
      const fill = maxBusMessageBytes - Buffer.byteLength(base) - '!:hs'.length
      const exact = `!${'é'.repeat(Math.floor(fill / 2))}${fill % 2 === 1 ? 'a' : ''}:hs`
      expect(Buffer.byteLength(base + exact)).to.equal(maxBusMessageBytes)
      const kept = encodeBusMessage({ type: 'POSITION', stream: 'events', writer: 'persister1', prev: 1n, next: 2n, rooms: [exact] })
      expect(kept.droppedHint).to.equal(undefined)
      const over = encodeBusMessage({ type: 'POSITION', stream: 'events', writer: 'persister1', prev: 1n, next: 2n, rooms: [`${exact}x`] })
      expect(over.droppedHint).to.equal('too-large')
    })

    it('should reject invalid names and positions with ES_INVALID_PARAM', () => {
      const ok = { type: 'POSITION' as const, stream: 'events', writer: 'p1', prev: 1n, next: 2n }
      expectInvalidParam({ ...ok, stream: 'ev ents' }, /stream name/)
      expectInvalidParam({ ...ok, stream: '' }, /stream name/)
      expectInvalidParam({ ...ok, writer: 'p\u00e91' }, /writer name/)
      expectInvalidParam({ ...ok, writer: 'x'.repeat(201) }, /writer name/)
      expectInvalidParam({ ...ok, prev: 3n }, /after next/)
      expectInvalidParam({ ...ok, next: 2n ** 63n }, /64-bit/)
      expectInvalidParam({ ...ok, prev: 1 as unknown as bigint }, /64-bit/)
      expectInvalidParam({ type: 'REPLICATE', from: 'a\nb' }, /REPLICATE sender/)
      expectInvalidParam({ type: 'RDATA' } as unknown as BusMessage, /unknown bus message type/)
    })
  })

  describe('decodeBusMessage', () => {
    it('should round-trip every encodable message', () => {
      fc.assert(
        fc.property(messageArb, (message) => {
          const { line, droppedHint } = encodeBusMessage(message)
          expect(droppedHint).to.equal(undefined)
          expect(line).not.to.match(/[\n\r]/)
          expect(decodeBusMessage(line)).to.deep.equal({ ok: true, message })
        }),
        { numRuns: 500 },
      )
    })

    it('should keep positions beyond 2^53 exact', () => {
      const next = 2n ** 62n + 1n
      const decoded = decodeBusMessage(`POSITION events p1 ${next - 1n} ${next}`)
      expect(decoded).to.deep.equal({ ok: true, message: { type: 'POSITION', stream: 'events', writer: 'p1', prev: next - 1n, next } })
    })

    it('should distinguish an empty hint from a missing one', () => {
      const empty = decodeBusMessage('POSITION events p1 1 2 -')
      const missing = decodeBusMessage('POSITION events p1 1 2')
      expect(empty.ok && empty.message.type === 'POSITION' && empty.message.rooms).to.deep.equal([])
      expect(missing.ok && missing.message.type === 'POSITION' && 'rooms' in missing.message).to.equal(false)
    })

    const malformed = [
      '',
      'HELLO',
      'position events p1 1 2',
      'POSITION',
      'POSITION events p1 1',
      'POSITION events p1 1 2 !a:hs extra',
      'POSITION events  p1 1 2',
      ' POSITION events p1 1 2',
      'POSITION events p1 1 2 ',
      'POSITION events p1 2 1',
      'POSITION events p1 01 2',
      'POSITION events p1 -0 2',
      'POSITION events p1 1 9223372036854775808',
      'POSITION events p1 1 2.5',
      'POSITION events p1 1 0x10',
      'POSITION events p1 1 2 !a:hs,,!b:hs',
      'POSITION events p1 1 2 !a:hs,',
      'POSITION events p1 1 2 !a:hs,-',
      'POSITION ev\tents p1 1 2',
      'POSITION events p1\n 1 2',
      'REPLICATE',
      'REPLICATE a b',
      `REPLICATE ${'x'.repeat(201)}`,
      'RDATA events p1 5 {}',
      'POSITION events p1 1 2\n',
    ]
    for (const line of malformed) {
      it(`should reject ${JSON.stringify(line)}`, () => {
        const decoded = decodeBusMessage(line)
        expect(decoded.ok).to.equal(false)
        expect(!decoded.ok && decoded.reason).to.be.a('string').and.not.equal('')
      })
    }

    it('should reject non-strings without throwing', () => {
      for (const value of [undefined, null, 42, {}, Buffer.from('REPLICATE a')]) {
        expect(decodeBusMessage(value).ok).to.equal(false)
      }
    })

    it('should never throw on garbage, and whatever it accepts re-encodes to the same line', () => {
      const wireish = fc
        .array(fc.constantFrom('POSITION', 'REPLICATE', 'events', 'p1', '1', '-2', '30', '-', '!a:hs', '!a:hs,!b:hs', ''), {
          maxLength: 7,
        })
        .map((words) => words.join(' '))
      fc.assert(
        fc.property(fc.oneof(fc.string({ maxLength: 80 }), fc.string({ unit: 'binary', maxLength: 40 }), wireish), (line) => {
          const decoded = decodeBusMessage(line)
          if (decoded.ok) expect(encodeBusMessage(decoded.message).line).to.equal(line)
          else expect(decoded.reason).to.be.a('string')
        }),
        { numRuns: 3000 },
      )
    })
  })
})
