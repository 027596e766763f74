import { expect } from 'chai'
import fc from 'fast-check'
import { isStorageError } from '../../../../storage/errors.js'
import { canonicalJsonBytes, compareCodePoints, encodeCanonicalJson, encodeCanonicalObject, type CanonicalMemberCache } from '../../../../storage/events/canonical-json.js'

/** JSON values within canonical JSON's domain, with strings over the whole Unicode range. */
const unicodeString = fc.string({ unit: 'binary', maxLength: 12 })
const { json: canonicalValueArb } = fc.letrec<{ json: unknown }>((tie) => ({
  json: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constant(null),
    fc.boolean(),
    fc.maxSafeInteger(),
    unicodeString,
    fc.array(tie('json'), { maxLength: 5 }),
    fc.dictionary(unicodeString, tie('json'), { maxKeys: 5 }),
  ),
}))

/** Characters around the places where UTF-16 order and code point order disagree. */
const trickyCharArb = fc.constantFrom('a', '\u007f', '\ud7ff', '\ue000', '\uff01', '\uffff', '\u{10000}', '\u{1f600}', '\u{10ffff}')
const trickyStringArb = fc.array(trickyCharArb, { maxLength: 4 }).map((chars) => chars.join(''))

function expectBadEvent(value: unknown, messagePart?: string): void {
  let thrown: unknown
  try {
    encodeCanonicalJson(value)
  } catch (err) {
    thrown = err
  }
  expect(isStorageError(thrown, 'ES_BAD_EVENT'), `${String(value)} should be rejected with ES_BAD_EVENT`).to.equal(true)
  if (messagePart !== undefined) expect((thrown as Error).message).to.include(messagePart)
}

describe('encodeCanonicalJson', () => {
  describe('spec appendix examples', () => {
    const examples: [input: unknown, expected: string][] = [
      [{}, '{}'],
      [{ one: 1, two: 'Two' }, '{"one":1,"two":"Two"}'],
      [{ b: '2', a: '1' }, '{"a":"1","b":"2"}'],
      [
        {
          auth: {
            success: true,
            mxid: '@john.doe:example.com',
            profile: {
              display_name: 'John Doe',
              three_pids: [
                { medium: 'email', address: 'john.doe@example.org' },
                { medium: 'msisdn', address: '123456789' },
              ],
            },
          },
        },
        '{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},"success":true}}',
      ],
      [{ a: '日本語' }, '{"a":"日本語"}'],
      [{ 本: 2, 日: 1 }, '{"日":1,"本":2}'],
      [{ a: '\u65E5' }, '{"a":"日"}'],
      [{ a: null }, '{"a":null}'],
      [{ a: -0, b: 1e10 }, '{"a":0,"b":10000000000}'],
    ]
    for (const [input, expected] of examples) {
      it(`should encode ${JSON.stringify(input)} as ${expected}`, () => {
        expect(encodeCanonicalJson(input)).to.equal(expected)
      })
    }
  })

  describe('strings', () => {
    it('should escape U+0000–U+001F with the short forms where they exist and \\u00xx lowercase otherwise', () => {
      const short: Record<number, string> = { 0x08: '\\b', 0x09: '\\t', 0x0a: '\\n', 0x0c: '\\f', 0x0d: '\\r' }
      for (let code = 0; code < 0x20; code++) {
        const expected = short[code] ?? `\\u00${code.toString(16).padStart(2, '0')}`
        expect(encodeCanonicalJson(String.fromCharCode(code)), `U+${code.toString(16)}`).to.equal(`"${expected}"`)
      }
    })

    it('should escape only the quote and the backslash among printable ASCII', () => {
      for (let code = 0x20; code < 0x7f; code++) {
        const char = String.fromCharCode(code)
        const expected = char === '"' ? '\\"' : char === '\\' ? '\\\\' : char
        expect(encodeCanonicalJson(char)).to.equal(`"${expected}"`)
      }
    })

    it('should write DEL, line/paragraph separators, BMP and astral characters verbatim', () => {
      const text = '\u007f\u2028\u2029é\uffff\u{1f600}\u{10ffff}'
      expect(encodeCanonicalJson(text)).to.equal(`"${text}"`)
    })

    it('should reject a lone surrogate in a value or a key', () => {
      expectBadEvent('\ud800', 'lone surrogate')
      expectBadEvent({ x: 'a\udfffb' }, '$.x')
      expectBadEvent({ ['\ud83d']: 1 }, 'lone surrogate')
    })
  })

  describe('numbers', () => {
    it('should accept integers at both ends of [-(2^53)+1, 2^53-1]', () => {
      expect(encodeCanonicalJson([9007199254740991, -9007199254740991, 0])).to.equal('[9007199254740991,-9007199254740991,0]')
    })

    it('should reject integers just outside the range', () => {
      expectBadEvent(9007199254740992)
      expectBadEvent(-9007199254740992)
      expectBadEvent(1e300)
    })

    it('should reject floats, NaN and infinities', () => {
      for (const value of [1.5, -0.1, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) expectBadEvent(value)
    })

    it('should print in-range bigints as integers and reject out-of-range ones', () => {
      expect(encodeCanonicalJson({ n: 2n ** 53n - 1n, m: -(2n ** 53n) + 1n })).to.equal('{"m":-9007199254740991,"n":9007199254740991}')
      expectBadEvent(2n ** 53n)
      expectBadEvent({ deep: [-(2n ** 53n)] }, '$.deep[0]')
    })
  })

  describe('values without a canonical form', () => {
    it('should reject undefined at the top, as a property value and as an array element', () => {
      expectBadEvent(undefined)
      expectBadEvent({ a: 1, b: undefined }, '$.b')
      expectBadEvent([1, undefined], '$[1]')
    })

    it('should reject functions and symbols', () => {
      expectBadEvent(() => 1)
      expectBadEvent({ f: Symbol('s') })
    })

    it('should reject non-plain objects', () => {
      class Thing {
        readonly a = 1
      }
      for (const value of [new Date(0), new Map(), new Set(), Buffer.from('x'), new Thing(), /re/]) expectBadEvent({ v: value }, '$.v')
    })

    it('should reject cyclic structures', () => {
      const cyclic: Record<string, unknown> = { a: 1 }
      cyclic['self'] = cyclic
      expectBadEvent(cyclic, 'cyclic')
    })

    it('should accept the same object twice when it is not its own ancestor', () => {
      const shared = { z: 1 }
      expect(encodeCanonicalJson({ a: shared, b: [shared] })).to.equal('{"a":{"z":1},"b":[{"z":1}]}')
    })

    it('should accept null-prototype objects and own __proto__ keys', () => {
      const bare = Object.create(null) as Record<string, unknown>
      bare['k'] = 'v'
      expect(encodeCanonicalJson(bare)).to.equal('{"k":"v"}')
      expect(encodeCanonicalJson(JSON.parse('{"__proto__":{"x":1},"a":2}'))).to.equal('{"__proto__":{"x":1},"a":2}')
    })
  })

  describe('key order', () => {
    it('should sort by code point, not UTF-16 code unit (U+FF01 before U+1F600)', () => {
      const value = { '\u{1f600}': 1, '\uff01': 2 }
      expect(Object.keys(value).sort()).to.deep.equal(['\u{1f600}', '\uff01'])
      expect(encodeCanonicalJson(value)).to.equal('{"\uff01":2,"\u{1f600}":1}')
    })

    it('should put a prefix before its extensions and integer-like keys in string order', () => {
      expect(encodeCanonicalJson({ ab: 1, a: 2, '10': 3, '9': 4, '1': 5 })).to.equal('{"1":5,"10":3,"9":4,"a":2,"ab":1}')
    })

    it('should order keys by their UTF-8 bytes (property)', () => {
      fc.assert(
        fc.property(fc.uniqueArray(fc.oneof(trickyStringArb, unicodeString), { maxLength: 8 }), (keys) => {
          const value = Object.fromEntries(keys.map((key, i) => [key, i]))
          const byBytes = [...keys].sort((x, y) => Buffer.compare(Buffer.from(x, 'utf8'), Buffer.from(y, 'utf8')))
          const expected = `{${byBytes.map((key) => `${JSON.stringify(key)}:${keys.indexOf(key)}`).join(',')}}`
          expect(encodeCanonicalJson(value)).to.equal(expected)
        }),
      )
    })

    it('should not depend on insertion order (property)', () => {
      fc.assert(
        fc.property(
          fc.uniqueArray(fc.tuple(trickyStringArb, fc.integer()), { selector: ([key]) => key, maxLength: 8 }),
          fc.infiniteStream(fc.nat()),
          (entries, randoms) => {
            const shuffled = entries
              .map((entry) => [randoms.next().value as number, entry] as const)
              .sort((x, y) => x[0] - y[0])
              .map(([, entry]) => entry)
            expect(encodeCanonicalJson(Object.fromEntries(shuffled))).to.equal(encodeCanonicalJson(Object.fromEntries(entries)))
          },
        ),
      )
    })
  })

  it('should round-trip through JSON.parse (property)', () => {
    fc.assert(
      fc.property(canonicalValueArb, (value) => {
        expect(JSON.parse(encodeCanonicalJson(value))).to.deep.equal(value)
      }),
    )
  })

  it('should be a fixed point: encoding the parsed encoding gives the same text (property)', () => {
    fc.assert(
      fc.property(canonicalValueArb, (value) => {
        const text = encodeCanonicalJson(value)
        expect(encodeCanonicalJson(JSON.parse(text))).to.equal(text)
      }),
    )
  })

  it('should contain no whitespace outside strings (property)', () => {
    fc.assert(
      fc.property(canonicalValueArb, (value) => {
        const outsideStrings = encodeCanonicalJson(value).replace(/"(?:[^"\\]|\\.)*"/g, '""')
        expect(outsideStrings).to.not.match(/\s/)
      }),
    )
  })
})

describe('canonicalJsonBytes', () => {
  it('should be the UTF-8 encoding of the canonical text', () => {
    const bytes = canonicalJsonBytes({ k: 'é', e: '\u{1f600}' })
    expect(bytes.toString('hex')).to.equal(Buffer.from('{"e":"\u{1f600}","k":"é"}', 'utf8').toString('hex'))
    expect(bytes.length).to.equal(21)
  })
})

describe('compareCodePoints', () => {
  it('should agree in sign with UTF-8 byte comparison (property)', () => {
    fc.assert(
      fc.property(fc.oneof(trickyStringArb, unicodeString), fc.oneof(trickyStringArb, unicodeString), (a, b) => {
        const expected = Math.sign(Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8')))
        expect(Math.sign(compareCodePoints(a, b))).to.equal(expected)
      }),
    )
  })

  it('encodeCanonicalObject should equal encodeCanonicalJson for views sharing members, with one cache (property)', () => {
    const json = fc.jsonValue({ maxDepth: 3 }).filter((v) => {
      try {
        encodeCanonicalJson(v)
        return true
      } catch {
        return false
      }
    })
    fc.assert(
      fc.property(fc.dictionary(fc.string({ maxLength: 6 }), json, { maxKeys: 6 }), json, fc.string({ maxLength: 6 }), (base, extra, key) => {
        const cache: CanonicalMemberCache = new Map()
        const views = [base, { ...base, [key]: extra }, Object.fromEntries(Object.entries(base).slice(1)), base]
        for (const view of views) expect(encodeCanonicalObject(view, cache)).to.equal(encodeCanonicalJson(view))
      }),
    )
  })

  it('encodeCanonicalObject should refuse what encodeCanonicalJson refuses, naming the path', () => {
    const cache: CanonicalMemberCache = new Map()
    expect(() => encodeCanonicalObject({ a: { b: 1.5 } }, cache)).to.throw(/at \$\.a\.b: 1\.5 is not an integer/)
    const cyclic: Record<string, unknown> = {}
    cyclic['self'] = cyclic
    expect(() => encodeCanonicalObject(cyclic, cache)).to.throw(/cyclic/)
  })
})
