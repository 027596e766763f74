import { expect } from 'chai'
import { SlidingConnections } from '../../../api/sliding-connections.js'

describe('SlidingConnections', () => {
  it('should know a connection by its last two positions: the one a request came from and the one it answered', () => {
    const connections = new SlidingConnections<string>()
    expect(connections.lookup('c', undefined)).to.equal('fresh')
    const p1 = connections.store('c', undefined, 'one')
    const p2 = connections.store('c', p1, 'two')
    expect([connections.lookup('c', p1), connections.lookup('c', p2)]).to.deep.equal(['one', 'two'])
    // The client went on from p2: p1 is forgotten.
    const p3 = connections.store('c', p2, 'three')
    expect([connections.lookup('c', p1), connections.lookup('c', p2), connections.lookup('c', p3)]).to.deep.equal(['unknown', 'two', 'three'])
    // A retry from p2 replaces p3.
    const p3b = connections.store('c', p2, 'three again')
    expect([connections.lookup('c', p3), connections.lookup('c', p3b)]).to.deep.equal(['unknown', 'three again'])
    // Starting afresh forgets everything; positions never name another connection's state.
    const fresh = connections.store('c', undefined, 'afresh')
    expect([connections.lookup('c', p2), connections.lookup('c', fresh), connections.lookup('d', fresh)]).to.deep.equal(['unknown', 'afresh', 'unknown'])
    expect(new Set([p1, p2, p3, p3b, fresh]).size).to.equal(5)
  })

  it('should forget idle connections and, past its size, the least recently used', () => {
    let now = 0
    const connections = new SlidingConnections<number>(2, 1_000, () => now)
    const a = connections.store('a', undefined, 1)
    now = 500
    const b = connections.store('b', undefined, 2)
    now = 1_200
    expect([connections.lookup('a', a), connections.lookup('b', b)]).to.deep.equal(['unknown', 2])
    // 'b' used again (a new position), then 'c' arrives: 'a' (idle) goes, then the size holds two.
    const b2 = connections.store('b', b, 3)
    connections.store('c', undefined, 4)
    expect(connections.size).to.equal(2)
    connections.store('d', undefined, 5)
    expect(connections.size).to.equal(2)
    expect(connections.lookup('b', b2)).to.equal('unknown')
  })

  it('should not take a position of an earlier run for one of this run', () => {
    const before = new SlidingConnections<string>()
    const after = new SlidingConnections<string>()
    const pos = before.store('c', undefined, 'x')
    after.store('c', undefined, 'y')
    expect(after.lookup('c', pos)).to.equal('unknown')
  })

  it('should hand its connections to another process: every position, and when each was last used', () => {
    let now = 10_000
    const before = new SlidingConnections<string>(10, 1_000, () => now)
    const p1 = before.store('c', undefined, 'one')
    const p2 = before.store('c', p1, 'two')
    now = 10_100
    const q = before.store('d', undefined, 'other')
    const saved = before.entries()
    expect(saved).to.deep.equal([
      { key: 'c', positions: [[p1, 'one'], [p2, 'two']], touched: 10_000 },
      { key: 'd', positions: [[q, 'other']], touched: 10_100 },
    ])

    const after = new SlidingConnections<string>(10, 1_000, () => now)
    const mine = after.store('d', undefined, 'mine')
    for (const c of saved) after.adopt(c.key, c.positions, c.touched)
    expect([after.lookup('c', p1), after.lookup('c', p2)]).to.deep.equal(['one', 'two'])
    // A connection it already holds stays its own.
    expect([after.lookup('d', q), after.lookup('d', mine)]).to.deep.equal(['unknown', 'mine'])
    // An adopted connection idles out from when it was last used, not from its adoption.
    now = 11_050
    expect(after.lookup('c', p2)).to.equal('unknown')
    const late = new SlidingConnections<string>(10, 1_000, () => now)
    late.adopt('c', saved[0]!.positions, saved[0]!.touched)
    expect([late.size, late.lookup('c', p2)]).to.deep.equal([0, 'unknown'])
  })
})
