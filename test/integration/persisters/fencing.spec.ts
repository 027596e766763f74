import { expect } from 'chai'
import { Registry } from 'prom-client'
import type { PersistedEvent } from '../../../persisters/new-event.js'
import { NotOwnerError } from '../../../persisters/persist-errors.js'
import type { Persister } from '../../../persisters/persister.js'
import { getCurrentState, getEvent, getRoomHead } from '../../../storage/events/event-store.js'
import { createTestDatabase } from '../../support/db.js'
import type { TestDatabase } from '../../support/db.js'
import { createRoomEvents, message, newRoomId, rejection, roomDag, send, startPersister, user } from './harness.js'

const alice = user('alice')

/** Checks that a room's stored events form one chain: one root, every other event has exactly one prev and one child at most. */
async function expectSingleChain(t: TestDatabase, roomId: string, answered: readonly PersistedEvent[]): Promise<void> {
  const dag = await roomDag(t.db, roomId)
  const ids = new Set(dag.events.map((e) => e.event_id))
  for (const a of answered) expect(ids.has(a.event_id), `answered ${a.event_id} is stored`).to.equal(true)
  expect(dag.events).to.have.length(new Set(answered.map((a) => a.event_id)).size)
  const children = new Map<string, number>()
  for (const edge of dag.edges) children.set(edge.prev_event_id, (children.get(edge.prev_event_id) ?? 0) + 1)
  expect([...children.values()].every((n) => n === 1), 'no event has two children (no fork)').to.equal(true)
  expect(dag.edges).to.have.length(dag.events.length - 1)
  expect(dag.forward).to.have.length(1)
  const depth = new Map(dag.events.map((e) => [e.event_id, e.depth]))
  for (const edge of dag.edges) expect(depth.get(edge.event_id)! > depth.get(edge.prev_event_id)!).to.equal(true)
}

describe('persister fencing', () => {
  let t: TestDatabase
  const persisters: Persister[] = []

  beforeEach(async () => {
    t = await createTestDatabase()
  })
  afterEach(async () => {
    await Promise.all(persisters.splice(0).map((p) => p.close()))
    await t.drop()
  })

  async function start(writer: string, pins: Record<string, string>, registry?: Registry): Promise<Persister> {
    const p = await startPersister(t.db, { writer, writers: ['p1', 'p2'], pins, ...(registry === undefined ? {} : { registry }) })
    persisters.push(p)
    return p
  }

  it('should commit on a current cache in one guarded statement, and by a transaction once another writer moved the head', async () => {
    const roomId = newRoomId()
    const registry = new Registry()
    const p1 = await start('p1', { [roomId]: 'p1' }, registry)
    const p2 = await start('p2', { [roomId]: 'p2' })
    const commits = async (path: string) =>
      (await registry.getSingleMetric('myelin_persist_commits_total')!.get()).values.find((v) => v.labels['path'] === path)?.value ?? 0

    const created = await send(p1, roomId, ...createRoomEvents(alice, { joinRule: 'public' }))
    expect([await commits('transaction'), await commits('statement')], 'a new room takes a transaction').to.deep.equal([1, 0])
    const first = await send(p1, roomId, message(alice, 'one'), { type: 'm.room.topic', state_key: '', sender: alice, content: { topic: 'cached' } })
    expect([await commits('transaction'), await commits('statement')], 'a cached room takes the statement').to.deep.equal([1, 1])

    const other = await send(p2, roomId, message(alice, 'from p2'))
    const stale = await send(p1, roomId, message(alice, 'after p2'))
    expect([await commits('transaction'), await commits('statement')], 'the guard saw p2 move the head').to.deep.equal([2, 1])
    const again = await send(p1, roomId, message(alice, 'cached again'))
    expect(await commits('statement')).to.equal(2)

    const all = [...created, ...first, ...other, ...stale, ...again]
    await expectSingleChain(t, roomId, all)
    const orderings = all.map((a) => a.stream_ordering)
    expect([...orderings].sort((a, b) => (a < b ? -1 : 1)), 'stream order follows the chain').to.deep.equal(orderings)
    const head = await getRoomHead(t.db, roomId)
    expect(head?.lastStreamOrdering).to.equal(again[0]?.stream_ordering)
    expect(head?.owner).to.equal('p1')
    const dag = await roomDag(t.db, roomId)
    expect(dag.forward).to.deep.equal([again[0]?.event_id])
    const topic = (await getCurrentState(t.db, roomId)).find((s) => s.type === 'm.room.topic')
    expect(topic).to.include({ eventId: first[1]?.event_id, streamOrdering: first[1]?.stream_ordering })
    expect(topic?.content).to.deep.equal({ topic: 'cached' })
  })

  it('should never fork a room when two persisters both believe they own it', async () => {
    const roomId = newRoomId()
    const p1 = await start('p1', { [roomId]: 'p1' })
    const p2 = await start('p2', { [roomId]: 'p2' })
    const created = await send(p1, roomId, ...createRoomEvents(alice, { joinRule: 'public' }))
    const sends = Array.from({ length: 60 }, (_, i) => send(i % 2 === 0 ? p1 : p2, roomId, message(alice, `m${i}`)))
    const answers = (await Promise.all(sends)).flat()
    expect(new Set(answers.map((a) => a.writer))).to.deep.equal(new Set(['p1', 'p2']))
    await expectSingleChain(t, roomId, [...created, ...answers])
    const head = await getRoomHead(t.db, roomId)
    expect(head!.epoch > 1n, 'ownership changed hands at least once').to.equal(true)
  })

  it('should re-read the room after another writer claimed it instead of linking to its stale cache', async () => {
    const roomId = newRoomId()
    const p1 = await start('p1', { [roomId]: 'p1' })
    const p2 = await start('p2', { [roomId]: 'p2' })
    await send(p1, roomId, ...createRoomEvents(alice))
    const [a] = await send(p1, roomId, message(alice, 'a'))
    expect((await getRoomHead(t.db, roomId))).to.include({ owner: 'p1', epoch: 1n })
    const [b] = await send(p2, roomId, message(alice, 'b'))
    expect((await getRoomHead(t.db, roomId))).to.include({ owner: 'p2', epoch: 2n })
    expect((await getEvent(t.db, b!.event_id))!.pdu['prev_events']).to.deep.equal([a!.event_id])
    const [c] = await send(p1, roomId, message(alice, 'c'))
    expect((await getRoomHead(t.db, roomId))).to.include({ owner: 'p1', epoch: 3n })
    const cPdu = (await getEvent(t.db, c!.event_id))!.pdu
    expect(cPdu['prev_events']).to.deep.equal([b!.event_id])
    expect(cPdu['depth']).to.equal(8)
  })

  it('should let a writer whose shard map gives the room away write nothing', async () => {
    const roomId = newRoomId()
    const owner = await start('p1', { [roomId]: 'p1' })
    const stale = await start('p2', { [roomId]: 'p1' })
    await send(owner, roomId, ...createRoomEvents(alice))
    const before = await roomDag(t.db, roomId)
    const err = await rejection(send(stale, roomId, message(alice, 'zombie')))
    expect(err).to.be.instanceOf(NotOwnerError)
    expect((err as NotOwnerError).owner).to.equal('p1')
    expect(await roomDag(t.db, roomId)).to.deep.equal(before)
    expect(await getRoomHead(t.db, roomId)).to.include({ owner: 'p1', epoch: 1n })
  })

  it('should create a room exactly once when two writers race to create it', async () => {
    const roomId = newRoomId()
    const p1 = await start('p1', { [roomId]: 'p1' })
    const p2 = await start('p2', { [roomId]: 'p2' })
    const results = await Promise.allSettled([send(p1, roomId, ...createRoomEvents(alice)), send(p2, roomId, ...createRoomEvents(alice))])
    const fulfilled = results.filter((r) => r.status === 'fulfilled')
    expect(fulfilled).to.have.length(1)
    const refused = results.find((r) => r.status === 'rejected') as PromiseRejectedResult
    expect(refused.reason.code).to.equal('ES_FORBIDDEN')
    await expectSingleChain(t, roomId, (fulfilled[0] as PromiseFulfilledResult<PersistedEvent[]>).value)
  })
})
