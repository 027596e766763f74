import { expect } from 'chai'
import fc from 'fast-check'
import { decodeBusMessage, encodeBusMessage } from '../../../../storage/bus/bus-message.js'
import { hintedMembers, streamHint, WriterPosition } from '../../../../storage/streams/writer-position.js'

type Op =
  | { kind: 'fetch'; n: number; room: string }
  | { kind: 'answer'; pick: number }
  | { kind: 'fail'; pick: number }
  | { kind: 'finish'; pick: number; committed: boolean }
  | { kind: 'peer'; n: number }

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('fetch' as const), n: fc.integer({ min: 1, max: 3 }), room: fc.constantFrom('!a:t', '!b:t', '!c:t') }),
  fc.record({ kind: fc.constant('answer' as const), pick: fc.nat() }),
  fc.record({ kind: fc.constant('fail' as const), pick: fc.nat() }),
  fc.record({ kind: fc.constant('finish' as const), pick: fc.nat(), committed: fc.boolean() }),
  fc.record({ kind: fc.constant('peer' as const), n: fc.integer({ min: 1, max: 4 }) }),
)

describe('WriterPosition', () => {
  it('should follow the example of its doc comment', () => {
    const w = new WriterPosition(10n, 10n)
    const fetch = w.beginFetch()
    w.endFetch(fetch, [11n, 12n])
    expect(w.position).to.equal(10n)
    w.finish([{ id: 12n, rooms: ['!a:hs'] }], true)
    expect(w.position).to.equal(10n)
    w.finish([{ id: 11n, rooms: undefined }], false)
    expect(w.position).to.equal(12n)
    expect(w.takeHint(12n)).to.deep.equal(['!a:hs'])
  })

  it('should hint any room for the range above its stored position when it starts behind the sequence', () => {
    const w = new WriterPosition(5n, 9n) // rows of a dead process may lie in (5, 9]
    expect(w.position).to.equal(9n)
    expect(w.takeHint(9n)).to.equal(undefined)
    const fetch = w.beginFetch()
    w.endFetch(fetch, [10n])
    w.finish([{ id: 10n, rooms: ['!a:hs'] }], true)
    expect(w.takeHint(10n)).to.deep.equal(['!a:hs'])
    expect(new WriterPosition(7n, 7n).takeHint(7n)).to.deep.equal([])
  })

  it('should hint any room after an unknown outcome, up to the sequence read after it', () => {
    const w = new WriterPosition(10n, 10n)
    w.outcomeUnknown()
    expect(w.takeHint(10n)).to.equal(undefined) // not bounded yet: any room
    w.boundUnknown(15n, w.unknownEpoch)
    w.observeAllocated(15n)
    expect(w.unknownPending).to.equal(false)
    expect(w.takeHint(12n)).to.equal(undefined)
    expect(w.takeHint(15n)).to.equal(undefined)
    const fetch = w.beginFetch()
    w.endFetch(fetch, [16n])
    w.finish([{ id: 16n, rooms: ['!a:hs'] }], true)
    expect(w.takeHint(16n)).to.deep.equal(['!a:hs'])
  })

  it('should keep waiting for a bound when another outcome became unknown during the read', () => {
    const w = new WriterPosition(0n, 0n)
    w.outcomeUnknown()
    const first = w.unknownEpoch
    w.outcomeUnknown()
    w.boundUnknown(5n, first)
    expect(w.unknownPending).to.equal(true)
    expect(w.takeHint(100n)).to.equal(undefined)
    expect(w.takeHint(100n)).to.equal(undefined)
    w.boundUnknown(7n, w.unknownEpoch)
    expect(w.takeHint(100n)).to.equal(undefined)
    expect(w.takeHint(100n)).to.deep.equal([])
  })

  it('should be held back by an in-flight fetch at the highest ID seen when it started', () => {
    const w = new WriterPosition(5n, 5n)
    const fetch = w.beginFetch()
    w.observeAllocated(9n) // the fetch's own ID may be among these
    expect(w.position).to.equal(5n)
    w.endFetch(fetch, [9n])
    expect(w.position).to.equal(8n)
    w.finish([{ id: 9n, rooms: [] }], true)
    expect(w.position).to.equal(9n)
  })

  it('should merge hints: absent wins, rolled-back IDs contribute nothing, taken hints are gone', () => {
    const w = new WriterPosition(0n, 0n)
    w.endFetch(w.beginFetch(), [1n, 2n, 3n])
    w.finish([{ id: 1n, rooms: ['!a:t'] }, { id: 2n, rooms: ['!b:t', '!a:t'] }], true)
    w.finish([{ id: 3n, rooms: ['!c:t'] }], false)
    expect([...(w.takeHint(3n) ?? [])].sort()).to.deep.equal(['!a:t', '!b:t'])
    expect(w.takeHint(3n)).to.deep.equal([])
    w.endFetch(w.beginFetch(), [4n, 5n])
    w.finish([{ id: 4n, rooms: undefined }, { id: 5n, rooms: ['!a:t'] }], true)
    expect(w.takeHint(5n)).to.equal(undefined)
  })

  it('should keep its invariants under random operations (property)', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 1n, max: 100n }), fc.array(opArb, { maxLength: 60 }), (start, ops) => {
        let sequence = start
        const w = new WriterPosition(start, start)
        const pending: { fetch: number; n: number; room: string }[] = []
        const unfinished: { id: bigint; room: string }[] = []
        const committedRooms = new Map<bigint, string>()
        let last = w.position
        for (const op of ops) {
          if (op.kind === 'fetch') pending.push({ fetch: w.beginFetch(), n: op.n, room: op.room })
          else if (op.kind === 'peer') {
            sequence += BigInt(op.n)
            w.observeAllocated(sequence)
          } else if ((op.kind === 'answer' || op.kind === 'fail') && pending.length > 0) {
            const [p] = pending.splice(op.pick % pending.length, 1) as [(typeof pending)[number]]
            if (op.kind === 'fail') w.endFetch(p.fetch, undefined)
            else {
              const ids = Array.from({ length: p.n }, () => ++sequence)
              w.endFetch(p.fetch, ids)
              for (const id of ids) unfinished.push({ id, room: p.room })
            }
          } else if (op.kind === 'finish' && unfinished.length > 0) {
            const [u] = unfinished.splice(op.pick % unfinished.length, 1) as [(typeof unfinished)[number]]
            w.finish([{ id: u.id, rooms: [u.room] }], op.committed)
            if (op.committed) committedRooms.set(u.id, u.room)
          }
          const position = w.position
          expect(position >= last, 'never backwards').to.equal(true)
          last = position
          for (const { id } of unfinished) expect(position < id, `position ${position} below unfinished ${id}`).to.equal(true)
          expect(position <= sequence).to.equal(true)
          if (pending.length === 0 && unfinished.length === 0) expect(position).to.equal(sequence)
          expect(w.idle).to.equal(pending.length === 0 && unfinished.length === 0)
          expect(w.unfinished()).to.deep.equal(unfinished.map((u) => u.id).sort((a, b) => (a < b ? -1 : 1)))
          const hint = w.takeHint(position)
          const expected = new Set<string>()
          for (const [id, room] of committedRooms) {
            if (id > position) continue
            expected.add(room)
            committedRooms.delete(id)
          }
          expect(new Set(hint)).to.deep.equal(expected)
        }
      }),
      { numRuns: 300 },
    )
  })
})

describe('membership hints (streamHint, hintedMembers)', () => {
  it('should give back exactly the members of a hint, through the bus wire format and merged ranges', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.stringMatching(/^![a-zA-Z0-9]{1,8}:hs$/), { maxLength: 5 }),
        fc.array(fc.stringMatching(/^@[a-z0-9._=-]{1,8}:hs$/), { maxLength: 5 }),
        (rooms, members) => {
          const hint = streamHint(rooms, members)
          const decoded = decodeBusMessage(encodeBusMessage({ type: 'POSITION', stream: 'events', writer: 'p1', prev: 1n, next: 2n, rooms: hint }).line)
          expect(decoded.ok).to.equal(true)
          const wire = decoded.ok && decoded.message.type === 'POSITION' ? decoded.message.rooms : undefined
          expect(new Set(hintedMembers(wire))).to.deep.equal(new Set(members))
          // Two IDs of one writer, merged by takeHint: the union of their members.
          const w = new WriterPosition(0n, 0n)
          const fetch = w.beginFetch()
          w.endFetch(fetch, [1n, 2n])
          w.finish([{ id: 1n, rooms: hint }], true)
          w.finish([{ id: 2n, rooms: streamHint([], ['@other:hs']) }], true)
          expect(new Set(hintedMembers(w.takeHint(2n)))).to.deep.equal(new Set([...members, '@other:hs']))
        },
      ),
    )
  })

  it('should not claim to know the members of a hint that lists rooms only, or of no hint', () => {
    expect(hintedMembers(['!a:hs'])).to.equal(undefined)
    expect(hintedMembers(undefined)).to.equal(undefined)
    expect(hintedMembers(streamHint(['!a:hs'], []))).to.deep.equal([])
    // A range merged with one whose hint was lost is unknown as a whole.
    const w = new WriterPosition(0n, 0n)
    const fetch = w.beginFetch()
    w.endFetch(fetch, [1n, 2n])
    w.finish([{ id: 1n, rooms: streamHint(['!a:hs'], ['@b:hs']) }], true)
    w.finish([{ id: 2n, rooms: undefined }], true)
    expect(hintedMembers(w.takeHint(2n))).to.equal(undefined)
  })

  it('should keep members unknown in a range merged with a hint that lists rooms only', () => {
    const w = new WriterPosition(0n, 0n)
    const fetch = w.beginFetch()
    w.endFetch(fetch, [1n, 2n])
    w.finish([{ id: 1n, rooms: streamHint(['!a:hs'], ['@b:hs']) }], true)
    w.finish([{ id: 2n, rooms: ['!c:hs'] }], true)
    const merged = w.takeHint(2n)
    expect(merged).to.include.members(['!a:hs', '!c:hs'])
    expect(hintedMembers(merged)).to.equal(undefined)
  })

  it('should keep the members of a range merged with an empty hint (rows in no room change no membership)', () => {
    const w = new WriterPosition(0n, 0n)
    const fetch = w.beginFetch()
    w.endFetch(fetch, [1n, 2n])
    w.finish([{ id: 1n, rooms: streamHint(['!a:hs'], ['@b:hs']) }], true)
    w.finish([{ id: 2n, rooms: [] }], true)
    expect(hintedMembers(w.takeHint(2n))).to.deep.equal(['@b:hs'])
  })

  it('should say that an empty hint (an idle advance) changed no membership, through the wire format', () => {
    const idle = new WriterPosition(7n, 7n).takeHint(7n)
    const decoded = decodeBusMessage(encodeBusMessage({ type: 'POSITION', stream: 'events', writer: 'p1', prev: 7n, next: 9n, rooms: idle }).line)
    const wire = decoded.ok && decoded.message.type === 'POSITION' ? decoded.message.rooms : undefined
    expect(wire).to.deep.equal([])
    expect(hintedMembers(wire)).to.deep.equal([])
  })
})
