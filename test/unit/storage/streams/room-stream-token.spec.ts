import { expect } from 'chai'
import fc from 'fast-check'
import { isStorageError } from '../../../../storage/errors.js'
import {
  RoomStreamToken,
  compareTopological,
  maxStreamPosition,
  parseRoomStreamToken,
} from '../../../../storage/streams/room-stream-token.js'

const writerIdArb = fc.integer({ min: 0, max: 6 })
const smallPosArb = fc.bigInt({ min: 0n, max: 40n })
const anyPosArb = fc.bigInt({ min: 0n, max: maxStreamPosition })

/** Vector tokens over few writers and small positions, so comparisons often relate. */
const tokenArb = fc
  .tuple(smallPosArb, fc.array(fc.tuple(writerIdArb, smallPosArb), { maxLength: 6 }))
  .map(([min, entries]) => RoomStreamToken.fromPositions(min, new Map(entries)))

/** Vector tokens over the whole writer-ID and position range. */
const wideTokenArb = fc
  .tuple(anyPosArb, fc.array(fc.tuple(fc.integer({ min: 0, max: 2_147_483_647 }), anyPosArb), { maxLength: 8 }))
  .map(([min, entries]) => RoomStreamToken.fromPositions(min, new Map(entries)))

const historicArb = fc
  .tuple(anyPosArb, fc.bigInt({ min: -maxStreamPosition - 1n, max: maxStreamPosition }))
  .map(([depth, stream]) => RoomStreamToken.historic(depth, stream))

function expectInvalid(text: string): void {
  let thrown: unknown
  try {
    parseRoomStreamToken(text)
  } catch (err) {
    thrown = err
  }
  expect(isStorageError(thrown, 'ES_INVALID_TOKEN'), `${JSON.stringify(text)} should be rejected`).to.equal(true)
}

describe('RoomStreamToken', () => {
  describe('parseRoomStreamToken', () => {
    it('should parse the three shapes', () => {
      const live = parseRoomStreamToken('s48211')
      expect(live.stream).to.equal(48211n)
      expect(live.isHistoric).to.equal(false)
      expect(live.positions().size).to.equal(0)

      const historic = parseRoomStreamToken('t97-48211')
      expect(historic.topological).to.equal(97n)
      expect(historic.stream).to.equal(48211n)

      const vector = parseRoomStreamToken('m48211~3.48215~7.48219')
      expect(vector.stream).to.equal(48211n)
      expect(vector.positionOf(3)).to.equal(48215n)
      expect(vector.positionOf(7)).to.equal(48219n)
      expect(vector.positionOf(4)).to.equal(48211n)
    })

    it('should accept negative stream parts of historic tokens (backfilled events)', () => {
      const token = parseRoomStreamToken('t5--3')
      expect(token.topological).to.equal(5n)
      expect(token.stream).to.equal(-3n)
      expect(token.serialize()).to.equal('t5--3')
    })

    it('should tolerate a trailing empty ~ and drop entries at or below the minimum', () => {
      expect(parseRoomStreamToken('m5~').serialize()).to.equal('s5')
      expect(parseRoomStreamToken('m5~1.9~').serialize()).to.equal('m5~1.9')
      expect(parseRoomStreamToken('m10~1.10~2.4~3.11').serialize()).to.equal('m10~3.11')
    })

    it('should sort writer entries by writer ID', () => {
      expect(parseRoomStreamToken('m1~9.5~2.3').serialize()).to.equal('m1~2.3~9.5')
    })

    it('should accept 2^63-1 and bigints beyond 2^53 exactly', () => {
      const big = 2n ** 60n + 7n
      expect(parseRoomStreamToken(`s${big}`).stream).to.equal(big)
      expect(parseRoomStreamToken(`s${maxStreamPosition}`).stream).to.equal(maxStreamPosition)
    })

    const rejected: [string, string][] = [
      ['', 'empty'],
      ['x5', 'unknown shape'],
      ['S5', 'upper-case shape'],
      ['s', 'missing number'],
      ['s-1', 'negative live position'],
      ['s+1', 'signed'],
      ['s01', 'leading zero'],
      ['s1.5', 'fraction'],
      ['s 1', 'space'],
      ['s1e3', 'exponent'],
      [`s${maxStreamPosition + 1n}`, 'beyond 64 bits'],
      ['s99999999999999999999', 'twenty digits'],
      ['m-1~1.2', 'negative minimum'],
      ['m1~1.-2', 'negative entry'],
      ['m1~1', 'entry without dot'],
      ['m1~.5', 'entry without writer'],
      ['m1~1.', 'entry without position'],
      ['m1~-1.5', 'negative writer'],
      ['m1~01.5', 'writer with leading zero'],
      ['m1~2147483648.5', 'writer beyond 2^31-1'],
      ['m1~a.5', 'non-numeric writer'],
      ['m1~1.5~1.6', 'duplicate writer'],
      ['m1~1.5~~2.6', 'empty entry in the middle'],
      ['m1~~', 'two trailing separators'],
      ['m', 'vector without minimum'],
      ['t5', 'historic without stream'],
      ['t-5', 'historic without depth'],
      ['t-1-5', 'negative depth'],
      ['t5-', 'historic with empty stream'],
      ['t5--0', 'negative zero'],
      ['t5-3~1.4', 'historic with a writer map'],
      ['t5-3-4', 'three parts'],
      ['s5\n', 'trailing newline'],
      [`m1${'~1.2'.repeat(600)}`, 'longer than 2000 characters'],
    ]
    for (const [text, why] of rejected) {
      it(`should reject ${why} with ES_INVALID_TOKEN`, () => expectInvalid(text))
    }

    it('should mention what is wrong in the message', () => {
      expect(() => parseRoomStreamToken('m1~1.5~1.6')).to.throw(/writer 1 appears twice/)
      expect(() => parseRoomStreamToken('q1')).to.throw(/must start with s, t or m/)
      expect(() => parseRoomStreamToken('s'.repeat(2001))).to.throw(/more than 2000/)
    })

    it('should never throw anything but ES_INVALID_TOKEN on arbitrary strings', () => {
      const tokenish = fc.stringMatching(/^[stm][0-9~.\-]{0,30}$/)
      fc.assert(
        fc.property(fc.oneof(fc.string({ maxLength: 60 }), fc.string({ unit: 'grapheme', maxLength: 30 }), tokenish), (text) => {
          try {
            const token = parseRoomStreamToken(text)
            // Whatever parses must re-serialize to something that parses to the same token.
            expect(parseRoomStreamToken(token.serialize()).equals(token)).to.equal(true)
          } catch (err) {
            expect(isStorageError(err, 'ES_INVALID_TOKEN'), String(err)).to.equal(true)
          }
        }),
        { numRuns: 3000 },
      )
    })
  })

  describe('serialize', () => {
    it('should round-trip through parse', () => {
      fc.assert(
        fc.property(fc.oneof(wideTokenArb, historicArb, tokenArb), (token) => {
          const again = parseRoomStreamToken(token.serialize())
          expect(again.equals(token)).to.equal(true)
          expect(again.stream).to.equal(token.stream)
          expect(again.topological).to.equal(token.topological)
          expect([...again.positions()]).to.deep.equal([...token.positions()])
        }),
      )
    })

    it('should never emit entries at or below the minimum', () => {
      fc.assert(
        fc.property(smallPosArb, fc.array(fc.tuple(writerIdArb, smallPosArb)), (min, entries) => {
          const text = RoomStreamToken.fromPositions(min, new Map(entries)).serialize()
          const [head, ...rest] = text.split('~')
          expect(head).to.match(/^[sm]/)
          for (const entry of rest) expect(BigInt(entry.split('.')[1] ?? '') > min, entry).to.equal(true)
          if (rest.length === 0) expect(text).to.equal(`s${min}`)
        }),
      )
    })

    it('should serialize as text in JSON', () => {
      expect(JSON.stringify({ next: parseRoomStreamToken('m1~2.3') })).to.equal('{"next":"m1~2.3"}')
    })
  })

  describe('fromPositions', () => {
    it('should reject negative positions and bad writer IDs', () => {
      expect(() => RoomStreamToken.fromPositions(-1n, new Map())).to.throw(/minimum position/)
      expect(() => RoomStreamToken.fromPositions(1n, new Map([[1, -5n]]))).to.throw(/position of writer 1/)
      expect(() => RoomStreamToken.fromPositions(1n, new Map([[1.5, 5n]]))).to.throw(/writer ID/)
      expect(() => RoomStreamToken.fromPositions(1n, new Map([[-1, 5n]]))).to.throw(/writer ID/)
    })

    it('should not be affected by later changes to the input map', () => {
      const input = new Map([[1, 10n]])
      const token = RoomStreamToken.fromPositions(5n, input)
      input.set(1, 20n)
      token.positions().set(1, 30n)
      expect(token.positionOf(1)).to.equal(10n)
    })
  })

  describe('positionOf / isRowAfter / covers / maxPosition', () => {
    it('should treat unlisted writers as being at the minimum', () => {
      const token = parseRoomStreamToken('m100~1.105~3.103')
      expect(token.isRowAfter(1, 105n)).to.equal(false)
      expect(token.isRowAfter(1, 106n)).to.equal(true)
      expect(token.isRowAfter(2, 101n)).to.equal(true)
      expect(token.isRowAfter(2, 100n)).to.equal(false)
      expect(token.covers(3, 103n)).to.equal(true)
      expect(token.covers(3, 104n)).to.equal(false)
      expect(token.maxPosition()).to.equal(105n)
      expect(parseRoomStreamToken('s7').maxPosition()).to.equal(7n)
    })

    it('should agree with isBeforeOrEqual: a row is covered iff the live token at it is before the token', () => {
      fc.assert(
        fc.property(tokenArb, writerIdArb, smallPosArb, (token, writerId, position) => {
          const row = RoomStreamToken.fromPositions(0n, new Map([[writerId, position]]))
          expect(token.covers(writerId, position)).to.equal(row.isBeforeOrEqual(token))
          expect(token.isRowAfter(writerId, position)).to.equal(!token.covers(writerId, position))
        }),
      )
    })
  })

  describe('isBeforeOrEqual', () => {
    it('should follow Synapse examples', () => {
      const t = parseRoomStreamToken
      expect(t('m5~1.8').isBeforeOrEqual(t('s8'))).to.equal(true)
      expect(t('s8').isBeforeOrEqual(t('m5~1.8'))).to.equal(false)
      expect(t('m5~1.8').isBeforeOrEqual(t('m6~2.9'))).to.equal(false)
      expect(t('m6~2.9').isBeforeOrEqual(t('m5~1.8'))).to.equal(false)
      expect(t('m5~1.8').isBeforeOrEqual(t('m5~1.8~2.6'))).to.equal(true)
    })

    it('should be reflexive', () => {
      fc.assert(
        fc.property(tokenArb, (a) => {
          expect(a.isBeforeOrEqual(a)).to.equal(true)
        }),
      )
    })

    it('should be antisymmetric on normalized tokens', () => {
      fc.assert(
        fc.property(tokenArb, tokenArb, (a, b) => {
          if (a.isBeforeOrEqual(b) && b.isBeforeOrEqual(a)) expect(a.serialize()).to.equal(b.serialize())
        }),
      )
    })

    it('should be transitive', () => {
      fc.assert(
        fc.property(tokenArb, tokenArb, tokenArb, (a, b, c) => {
          if (a.isBeforeOrEqual(b) && b.isBeforeOrEqual(c)) expect(a.isBeforeOrEqual(c)).to.equal(true)
        }),
        { numRuns: 2000 },
      )
    })

    it('should be equivalent to comparing every writer that appears in either token', () => {
      fc.assert(
        fc.property(tokenArb, tokenArb, (a, b) => {
          let expected = a.stream <= b.stream
          for (let w = 0; w <= 6; w++) expected &&= a.positionOf(w) <= b.positionOf(w)
          expect(a.isBeforeOrEqual(b)).to.equal(expected)
        }),
      )
    })
  })

  describe('copyAndAdvance', () => {
    it('should take per-writer maxima and drop redundant entries', () => {
      const t = parseRoomStreamToken
      expect(t('m5~1.8').copyAndAdvance(t('m6~2.9')).serialize()).to.equal('m6~1.8~2.9')
      expect(t('m5~1.8').copyAndAdvance(t('s8')).serialize()).to.equal('s8')
      expect(t('m100~1.105~3.103').copyAndAdvance(t('s104')).serialize()).to.equal('m104~1.105')
    })

    it('should be commutative, associative and idempotent', () => {
      fc.assert(
        fc.property(tokenArb, tokenArb, tokenArb, (a, b, c) => {
          expect(a.copyAndAdvance(b).serialize()).to.equal(b.copyAndAdvance(a).serialize())
          expect(a.copyAndAdvance(b).copyAndAdvance(c).serialize()).to.equal(
            a.copyAndAdvance(b.copyAndAdvance(c)).serialize(),
          )
          expect(a.copyAndAdvance(a).serialize()).to.equal(a.serialize())
        }),
      )
    })

    it('should be the least upper bound of both tokens', () => {
      fc.assert(
        fc.property(tokenArb, tokenArb, tokenArb, (a, b, c) => {
          const joined = a.copyAndAdvance(b)
          expect(a.isBeforeOrEqual(joined)).to.equal(true)
          expect(b.isBeforeOrEqual(joined)).to.equal(true)
          if (a.isBeforeOrEqual(c) && b.isBeforeOrEqual(c)) expect(joined.isBeforeOrEqual(c)).to.equal(true)
          if (a.isBeforeOrEqual(b)) expect(joined.serialize()).to.equal(b.serialize())
        }),
      )
    })

    it('should refuse historic tokens', () => {
      expect(() => parseRoomStreamToken('t1-2').copyAndAdvance(parseRoomStreamToken('s3'))).to.throw(/historic/)
      expect(() => parseRoomStreamToken('s3').copyAndAdvance(parseRoomStreamToken('t1-2'))).to.throw(/historic/)
    })
  })

  describe('clampTo', () => {
    it('should clamp every component', () => {
      const t = parseRoomStreamToken
      expect(t('m90~1.120~2.95').clampTo(100n).serialize()).to.equal('m90~1.100~2.95')
      expect(t('m150~1.160').clampTo(100n).serialize()).to.equal('s100')
      expect(t('s50').clampTo(100n).serialize()).to.equal('s50')
      expect(t('t9-150').clampTo(100n).serialize()).to.equal('t9-100')
      expect(t('t9--5').clampTo(100n).serialize()).to.equal('t9--5')
    })

    it('should stay below the bound everywhere and leave tokens below it unchanged', () => {
      fc.assert(
        fc.property(tokenArb, smallPosArb, (token, bound) => {
          const clamped = token.clampTo(bound)
          expect(clamped.maxPosition() <= bound).to.equal(true)
          expect(clamped.isBeforeOrEqual(token)).to.equal(true)
          expect(clamped.isBeforeOrEqual(RoomStreamToken.live(bound))).to.equal(true)
          for (let w = 0; w <= 6; w++) {
            const expected = token.positionOf(w) < bound ? token.positionOf(w) : bound
            expect(clamped.positionOf(w)).to.equal(expected)
          }
          if (token.maxPosition() <= bound) expect(clamped.serialize()).to.equal(token.serialize())
        }),
      )
    })
  })

  describe('compareTopological', () => {
    it('should order by depth, then stream', () => {
      const t = parseRoomStreamToken
      expect(compareTopological(t('t5-10'), t('t5-12'))).to.equal(-1)
      expect(compareTopological(t('t6-1'), t('t5-12'))).to.equal(1)
      expect(compareTopological(t('t6--1'), t('t6--1'))).to.equal(0)
      expect(compareTopological(t('t6--2'), t('t6--1'))).to.equal(-1)
    })

    it('should refuse non-historic tokens', () => {
      expect(() => compareTopological(parseRoomStreamToken('s1'), parseRoomStreamToken('t1-1'))).to.throw(/historic/)
    })

    it('should be a total order consistent with the pair (depth, stream)', () => {
      fc.assert(
        fc.property(historicArb, historicArb, (a, b) => {
          const cmp = compareTopological(a, b)
          expect(compareTopological(b, a)).to.equal(-cmp)
          const expected =
            a.topological! !== b.topological!
              ? a.topological! < b.topological!
                ? -1
                : 1
              : a.stream === b.stream
                ? 0
                : a.stream < b.stream
                  ? -1
                  : 1
          expect(cmp).to.equal(expected)
        }),
      )
    })
  })
})
