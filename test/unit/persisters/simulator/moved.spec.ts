import { expect } from 'chai'
import { movedRooms, persisterNames } from '../../../../persisters/simulator/moved.js'
import type { MovedChange, MovedRooms } from '../../../../persisters/simulator/moved.js'
import { createShardMap } from '../../../../persisters/shard-map.js'

const roomIds = Array.from({ length: 10_000 }, (_, i) => `!room${i}:sim`)
const byStrategy = (change: MovedChange): Record<string, MovedRooms> => Object.fromEntries(change.strategies.map((s) => [s.strategy, s]))

describe('movedRooms', () => {
  it('should move about 1/(N+1) (rendezvous) and N/(N+1) (modulo) of the rooms when adding, 1/N and (N-1)/N when removing', () => {
    for (const n of [2, 5, 10]) {
      const report = movedRooms({ roomIds, persisters: n })
      const add = byStrategy(report.add)
      const remove = byStrategy(report.remove!)
      // binomial sd at 10k rooms <= 0.005; 0.025 is 5 sd
      expect(add.rendezvous!.fraction, `add n=${n}`).to.be.closeTo(1 / (n + 1), 0.025)
      expect(add.modulo!.fraction, `add n=${n}`).to.be.closeTo(n / (n + 1), 0.025)
      expect(remove.rendezvous!.fraction, `remove n=${n}`).to.be.closeTo(1 / n, 0.025)
      expect(remove.modulo!.fraction, `remove n=${n}`).to.be.closeTo((n - 1) / n, 0.025)
      expect(add.rendezvous!.expectedFraction).to.be.closeTo(1 / (n + 1), 1e-6)
      expect(remove.modulo!.expectedFraction).to.be.closeTo((n - 1) / n, 1e-6)
      expect(report.remove!.removed).to.equal(`persister${n}`)
    }
  })

  it('should count exactly the rooms whose owner changes', () => {
    const ids = roomIds.slice(0, 3000)
    const report = movedRooms({ roomIds: ids, persisters: 3 })
    const before = createShardMap({ writers: persisterNames(3), strategy: 'modulo' })
    const after = createShardMap({ writers: persisterNames(4), strategy: 'modulo' })
    const expected = ids.filter((id) => before.ownerOf(id) !== after.ownerOf(id)).length
    expect(byStrategy(report.add).modulo).to.include({ rooms: expected })
  })

  it('should weight traffic by room activity', () => {
    // All traffic in one room: the traffic fraction is 1 if that room moves, else 0.
    const ids = roomIds.slice(0, 1000)
    const weights = new Float64Array(1000)
    weights[0] = 1
    const modulo = byStrategy(movedRooms({ roomIds: ids, weights, persisters: 4 }).add).modulo!
    const moves = createShardMap({ writers: persisterNames(4), strategy: 'modulo' }).ownerOf(ids[0]!) !==
      createShardMap({ writers: persisterNames(5), strategy: 'modulo' }).ownerOf(ids[0]!)
    expect(modulo).to.have.property('trafficFraction', moves ? 1 : 0)
  })

  it('should keep pinned rooms in place and drop pins to a removed writer', () => {
    const ids = roomIds.slice(0, 2000)
    const pins = Object.fromEntries(ids.slice(0, 200).map((id) => [id, 'persister1']))
    const plain = movedRooms({ roomIds: ids, persisters: 3 })
    const pinned = movedRooms({ roomIds: ids, persisters: 3, pins })
    for (const strategy of ['rendezvous', 'modulo']) {
      expect(byStrategy(pinned.add)[strategy]!.rooms).to.be.below(byStrategy(plain.add)[strategy]!.rooms)
    }
    const toRemoved = Object.fromEntries(ids.slice(0, 200).map((id) => [id, 'persister3']))
    const removal = byStrategy(movedRooms({ roomIds: ids, persisters: 3, pins: toRemoved }).remove!)
    const unpinnedOnP3 = ids.slice(200).filter((id) => createShardMap({ writers: persisterNames(3) }).ownerOf(id) === 'persister3').length
    expect(removal.rendezvous!.rooms).to.equal(200 + unpinnedOnP3)
  })

  it('should report no removal for a single persister', () => {
    const report = movedRooms({ roomIds: roomIds.slice(0, 100), persisters: 1 })
    expect(report.remove).to.equal(null)
    expect(byStrategy(report.add).rendezvous!.fraction).to.be.closeTo(0.5, 0.15)
  })
})
