import { createHash } from 'node:crypto'
import { expect } from 'chai'
import fc from 'fast-check'
import { cachedRooms, createShardMap } from '../../../persisters/shard-map.js'
import { expectStorageError } from '../../support/expect-error.js'

const writers = (n: number): string[] => Array.from({ length: n }, (_, i) => `persister${i + 1}`)
const rooms = (n: number): string[] => Array.from({ length: n }, (_, i) => `!r${i}x:shard.test`)

/** Synapse's formula written independently: BigInt of the reversed (little-endian) digest. */
function synapseIndex(roomId: string, n: number): number {
  const digest = createHash('sha256').update(Buffer.from(roomId, 'utf8')).digest()
  const hex = Buffer.from(digest).reverse().toString('hex')
  return Number(BigInt(`0x${hex}`) % BigInt(n))
}

const expectConfigError = (fn: () => unknown, pattern: RegExp) => expectStorageError(fn, 'ES_CONFIG_INVALID', pattern)

describe('createShardMap', () => {
  describe('modulo', () => {
    it('should match vectors computed with Synapse\'s Python formula', () => {
      // python3: int.from_bytes(sha256(room.encode()).digest(), 'little') % n, for n in 2, 3, 4, 5, 7
      const vectors: Array<[string, number[]]> = [
        ['!abc:example.org', [0, 0, 2, 2, 0]],
        ['!room0:sim', [0, 0, 2, 4, 0]],
        ['!room1:sim', [1, 2, 3, 3, 6]],
        ['!Ünïcødé:例え.jp', [1, 1, 3, 1, 0]],
        ['!hot:matrix.org', [1, 2, 3, 3, 6]],
        ['!x:y', [0, 1, 0, 1, 5]],
      ]
      for (const [roomId, indices] of vectors) {
        ;[2, 3, 4, 5, 7].forEach((n, k) => {
          const map = createShardMap({ writers: writers(n), strategy: 'modulo' })
          expect(map.ownerOf(roomId), `${roomId} n=${n}`).to.equal(`persister${(indices[k] as number) + 1}`)
        })
      }
    })

    it('should equal the little-endian BigInt computation for arbitrary room IDs and writer counts', () => {
      fc.assert(
        fc.property(fc.string({ unit: 'binary', maxLength: 80 }), fc.integer({ min: 1, max: 40 }), (roomId, n) => {
          const list = writers(n).reverse()
          const map = createShardMap({ writers: list, strategy: 'modulo' })
          expect(map.ownerOf(roomId)).to.equal(list[synapseIndex(roomId, n)])
        }),
        { numRuns: 2000 },
      )
    })

    it('should index the writers in configured order', () => {
      const forward = createShardMap({ writers: ['a', 'b', 'c'], strategy: 'modulo' })
      const backward = createShardMap({ writers: ['c', 'b', 'a'], strategy: 'modulo' })
      const mirrored = { a: 'c', b: 'b', c: 'a' } as Record<string, string>
      for (const roomId of rooms(300)) {
        expect(backward.ownerOf(roomId)).to.equal(mirrored[forward.ownerOf(roomId)])
      }
    })

    it('should send every room to a single writer', () => {
      const map = createShardMap({ writers: ['only'], strategy: 'modulo' })
      for (const roomId of rooms(50)) expect(map.ownerOf(roomId)).to.equal('only')
    })

    it('should move about N/(N+1) of the rooms when a writer is added', () => {
      const ids = rooms(20_000)
      for (const n of [2, 4, 7]) {
        const before = createShardMap({ writers: writers(n), strategy: 'modulo' })
        const after = createShardMap({ writers: writers(n + 1), strategy: 'modulo' })
        const moved = ids.filter((id) => before.ownerOf(id) !== after.ownerOf(id)).length / ids.length
        // binomial standard deviation at 20k rooms is below 0.0036; 0.02 is more than 5 of them
        expect(moved, `n=${n}`).to.be.closeTo(n / (n + 1), 0.02)
      }
    })
  })

  describe('rendezvous', () => {
    it('should be the default and match vectors computed independently in Python', () => {
      // python3: max(sorted(ws), key=lambda w: int.from_bytes(sha256((w + '\0' + room).encode()).digest()[:8], 'big'))
      const vectors: Array<[string, string, string]> = [
        ['!abc:example.org', 'persister3', 'persister3'],
        ['!room0:sim', 'persister3', 'persister3'],
        ['!room1:sim', 'persister4', 'persister1'],
        ['!Ünïcødé:例え.jp', 'persister2', 'persister2'],
        ['!hot:matrix.org', 'persister2', 'persister2'],
        ['!x:y', 'persister2', 'persister2'],
      ]
      const four = createShardMap({ writers: writers(4) })
      const three = createShardMap({ writers: writers(3) })
      expect(four.strategy).to.equal('rendezvous')
      for (const [roomId, owner4, owner3] of vectors) {
        expect(four.ownerOf(roomId), roomId).to.equal(owner4)
        expect(three.ownerOf(roomId), roomId).to.equal(owner3)
      }
    })

    it('should give the same owner for the same input regardless of writer order or map instance', () => {
      fc.assert(
        fc.property(
          fc.string({ maxLength: 60 }),
          fc.uniqueArray(fc.string({ minLength: 1, maxLength: 12 }).filter((s) => !s.includes('\u0000')), {
            minLength: 1,
            maxLength: 8,
          }),
          fc.func(fc.integer()),
          (roomId, list, key) => {
            const shuffled = [...list].sort((a, b) => key(a) - key(b) || (a < b ? -1 : 1))
            const owner = createShardMap({ writers: list }).ownerOf(roomId)
            expect(list).to.include(owner)
            expect(createShardMap({ writers: shuffled }).ownerOf(roomId)).to.equal(owner)
            expect(createShardMap({ writers: list }).ownerOf(roomId)).to.equal(owner)
          },
        ),
        { numRuns: 500 },
      )
    })

    it('should move about 1/(N+1) of the rooms when a writer is added, only onto the new writer', () => {
      const ids = rooms(20_000)
      for (const n of [1, 3, 6]) {
        const before = createShardMap({ writers: writers(n) })
        const after = createShardMap({ writers: writers(n + 1) })
        let moved = 0
        for (const id of ids) {
          const from = before.ownerOf(id)
          const to = after.ownerOf(id)
          if (from !== to) {
            moved++
            expect(to, id).to.equal(`persister${n + 1}`)
          }
        }
        // binomial standard deviation at 20k rooms is at most 0.0036; 0.02 is more than 5 of them
        expect(moved / ids.length, `n=${n}`).to.be.closeTo(1 / (n + 1), 0.02)
      }
    })

    it('should move only the removed writer\'s rooms when a writer is removed', () => {
      const ids = rooms(5_000)
      const before = createShardMap({ writers: writers(5) })
      const after = createShardMap({ writers: ['persister1', 'persister2', 'persister4', 'persister5'] })
      for (const id of ids) {
        const from = before.ownerOf(id)
        if (from !== 'persister3') expect(after.ownerOf(id), id).to.equal(from)
      }
    })

    it('should balance rooms across writers', () => {
      const ids = rooms(20_000)
      for (const n of [4, 8]) {
        const map = createShardMap({ writers: writers(n) })
        const counts = new Map<string, number>()
        for (const id of ids) counts.set(map.ownerOf(id), (counts.get(map.ownerOf(id)) ?? 0) + 1)
        expect(counts.size).to.equal(n)
        const mean = ids.length / n
        const sd = Math.sqrt(ids.length * (1 / n) * (1 - 1 / n))
        for (const [writer, count] of counts) expect(Math.abs(count - mean), writer).to.be.below(6 * sd)
      }
    })
  })

  describe('pins', () => {
    it('should win over both strategies and leave other rooms alone', () => {
      for (const strategy of ['rendezvous', 'modulo'] as const) {
        const plain = createShardMap({ writers: writers(4), strategy })
        const hot = rooms(200).find((id) => plain.ownerOf(id) !== 'persister2') as string
        const pinned = createShardMap({ writers: writers(4), strategy, pins: { [hot]: 'persister2' } })
        expect(pinned.ownerOf(hot)).to.equal('persister2')
        for (const id of rooms(500)) if (id !== hot) expect(pinned.ownerOf(id)).to.equal(plain.ownerOf(id))
      }
    })
  })

  describe('configuration errors', () => {
    it('should reject an empty writer list', () => {
      expectConfigError(() => createShardMap({ writers: [] }), /at least one event writer/)
    })

    it('should reject a pin naming an unknown writer', () => {
      expectConfigError(
        () => createShardMap({ writers: writers(2), pins: { '!hot:sim': 'persister9' } }),
        /!hot:sim.*persister9/,
      )
    })

    it('should reject duplicate and malformed writer names and unknown strategies, listing every problem', () => {
      expectConfigError(() => createShardMap({ writers: ['a', 'a'] }), /listed twice/)
      expectConfigError(() => createShardMap({ writers: ['a\u0000b'] }), /NUL/)
      expectConfigError(() => createShardMap({ writers: [''] }), /non-empty/)
      expectConfigError(
        () => createShardMap({ writers: ['a', 'a'], strategy: 'ring' as never }),
        /listed twice.*unknown shard strategy "ring"/,
      )
    })

    it('should expose a frozen copy of the writers', () => {
      const list = writers(3)
      const map = createShardMap({ writers: list })
      list.push('persister4')
      expect(map.writers).to.deep.equal(writers(3))
      expect(Object.isFrozen(map.writers)).to.equal(true)
    })
  })

  describe('remembered owners', () => {
    for (const strategy of ['rendezvous', 'modulo'] as const) {
      it(`should answer every room as a new map does, before and after forgetting (${strategy})`, () => {
        const all = rooms(cachedRooms + 100)
        const map = createShardMap({ writers: writers(3), strategy })
        const first = all.map((roomId) => map.ownerOf(roomId))
        // Asked again in reverse: the last rooms are remembered, the first ones were forgotten.
        const again = [...all].reverse().map((roomId) => map.ownerOf(roomId)).reverse()
        const fresh = createShardMap({ writers: writers(3), strategy })
        const sample = all.flatMap((_, i) => (i % 97 === 0 || i >= cachedRooms ? [i] : []))
        expect(sample.map((i) => fresh.ownerOf(all[i] as string))).to.deep.equal(sample.map((i) => first[i]))
        expect(again).to.deep.equal(first)
        expect(new Set(first).size).to.equal(3)
      })
    }
  })
})
