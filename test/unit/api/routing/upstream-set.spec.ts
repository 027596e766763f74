import { expect } from 'chai'
import fc from 'fast-check'
import { createUpstreamSet, upstreamsFromProcesses, type Upstream } from '../../../../api/routing/upstream-set.js'
import { createShardMap } from '../../../../persisters/shard-map.js'
import { isStorageError } from '../../../../storage/errors.js'

const up = (name: string, port: number): Upstream => ({ name, host: '127.0.0.1', port })
const api = [up('api1', 1001), up('api2', 1002), up('api3', 1003)]
const persisters = new Map([
  ['persister1', up('persister1', 2001)],
  ['persister2', up('persister2', 2002)],
])
const shardMap = createShardMap({ writers: ['persister1', 'persister2'] })

function makeSet(options: { api?: Upstream[]; persisters?: Map<string, Upstream>; clock?: () => number } = {}) {
  return createUpstreamSet({ api: options.api ?? api, persisters: options.persisters ?? persisters }, { shardMap, downMs: 1000, clock: options.clock ?? (() => 0) })
}

describe('createUpstreamSet', () => {
  it('should rotate round robin over the api workers, each plan listing every api worker once', () => {
    const set = makeSet()
    const firsts = []
    for (let i = 0; i < 6; i++) {
      const plan = set.plan({ kind: 'any' }, undefined)
      expect(plan.map((u) => u.name).sort()).to.deep.equal(['api1', 'api2', 'api3'])
      firsts.push(plan[0]!.name)
    }
    expect(firsts).to.deep.equal(['api1', 'api2', 'api3', 'api1', 'api2', 'api3'])
  })

  it('should put the owner persister first for a room write, then the api workers', () => {
    fc.assert(
      fc.property(fc.string({ minLength: 1 }), (opaque) => {
        const roomId = `!${opaque}:hs.test`
        const plan = makeSet().plan({ kind: 'room-write', roomId }, undefined)
        expect(plan.map((u) => u.name)).to.have.length(4)
        expect(plan[0]!.name).to.equal(shardMap.ownerOf(roomId))
        expect(plan.slice(1).every((u) => u.name.startsWith('api'))).to.equal(true)
      }),
    )
    expect(makeSet({ persisters: new Map() }).plan({ kind: 'room-write', roomId: '!a:hs.test' }, undefined).map((u) => u.name)).to.have.members(['api1', 'api2', 'api3'])
  })

  it('should pin a user to one api worker whatever the order of workers or their ports', () => {
    fc.assert(
      fc.property(fc.string(), fc.nat(1000), (userKey, port) => {
        const first = makeSet().plan({ kind: 'sync' }, userKey)[0]!.name
        const reordered = makeSet({ api: [up('api3', port + 1), up('api1', port + 2), up('api2', port + 3)] })
        expect(reordered.plan({ kind: 'sync' }, userKey)[0]!.name).to.equal(first)
        expect(reordered.plan({ kind: 'sync' }, userKey)[0]!.name).to.equal(first)
      }),
    )
    const users = Array.from({ length: 60 }, (_, i) => `user${i}`)
    const chosen = new Set(users.map((u) => makeSet().plan({ kind: 'sync' }, u)[0]!.name))
    expect(chosen).to.deep.equal(new Set(['api1', 'api2', 'api3']))
  })

  it('should move only the users of a removed api worker', () => {
    const users = Array.from({ length: 200 }, (_, i) => `user${i}`)
    const all = makeSet()
    const without2 = makeSet({ api: [api[0]!, api[2]!] })
    for (const user of users) {
      const before = all.plan({ kind: 'sync' }, user)[0]!.name
      if (before !== 'api2') expect(without2.plan({ kind: 'sync' }, user)[0]!.name, user).to.equal(before)
    }
  })

  it('should move an upstream marked down to the end of plans until downMs has passed', () => {
    let now = 0
    const set = makeSet({ clock: () => now })
    const owner = shardMap.ownerOf('!r:hs.test')
    set.markDown(persisters.get(owner)!)
    set.markDown(api[0]!)
    for (let i = 0; i < 3; i++) {
      const plan = set.plan({ kind: 'room-write', roomId: '!r:hs.test' }, undefined).map((u) => u.name)
      expect(plan.slice(-2)).to.deep.equal([owner, 'api1'])
    }
    now = 1000
    expect(set.plan({ kind: 'room-write', roomId: '!r:hs.test' }, undefined)[0]!.name).to.equal(owner)
  })

  it('should not consider a restarted upstream on a new port down', () => {
    const set = makeSet({ api: [up('api1', 1001)] })
    set.markDown(up('api1', 9999))
    expect(set.plan({ kind: 'any' }, undefined)).to.deep.equal([up('api1', 1001)])
  })

  it('should plan nothing without upstreams, and reject duplicate api names', () => {
    expect(makeSet({ api: [], persisters: new Map() }).plan({ kind: 'sync' }, 'u')).to.deep.equal([])
    try {
      makeSet({ api: [up('api1', 1), up('api1', 2)] })
      expect.fail('expected ES_CONFIG_INVALID')
    } catch (err) {
      expect(isStorageError(err, 'ES_CONFIG_INVALID'), String(err)).to.equal(true)
    }
  })
})

describe('upstreamsFromProcesses', () => {
  it('should take api workers and persisters with a port, and main only without api workers', () => {
    const processes = [
      { name: 'main', role: 'main', port: 1 },
      { name: 'api1', role: 'api', port: 2 },
      { name: 'api2', role: 'api', port: null },
      { name: 'persister1', role: 'persister', port: 3 },
      { name: 'persister2', role: 'persister', port: null },
      { name: 'bg', role: 'background', port: 4 },
    ]
    const upstreams = upstreamsFromProcesses(processes, 'localhost')
    expect(upstreams.api).to.deep.equal([{ name: 'api1', host: 'localhost', port: 2 }])
    expect([...upstreams.persisters.entries()]).to.deep.equal([['persister1', { name: 'persister1', host: 'localhost', port: 3 }]])
    const monolith = upstreamsFromProcesses([{ name: 'main', role: 'main', port: 8008 }])
    expect(monolith.api).to.deep.equal([{ name: 'main', host: '127.0.0.1', port: 8008 }])
  })
})
