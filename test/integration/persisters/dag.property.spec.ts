import { expect } from 'chai'
import fc from 'fast-check'
import type { NewEvent, PersistedEvent } from '../../../persisters/new-event.js'
import { NotOwnerError, RejectedEventError } from '../../../persisters/persist-errors.js'
import type { Persister } from '../../../persisters/persister.js'
import { createShardMap } from '../../../persisters/shard-map.js'
import { createTestDatabase } from '../../support/db.js'
import type { TestDatabase } from '../../support/db.js'
import { createRoomEvents, member, message, newRoomId, roomDag, send, startPersister, user } from './harness.js'

const alice = user('alice')
const others = [user('bob'), user('carol')]

/** One send: which room, which persister it is routed to, and what. */
interface Send {
  readonly room: number
  readonly via: number
  readonly action: 'message' | 'join' | 'leave' | 'topic'
  readonly who: number
}

const sendArb = fc.record({
  room: fc.nat(2),
  via: fc.nat(2),
  action: fc.constantFrom('message', 'join', 'leave', 'topic'),
  who: fc.nat(2),
}) satisfies fc.Arbitrary<Send>

const scenarioArb = fc.record({
  writers: fc.integer({ min: 2, max: 3 }),
  rooms: fc.integer({ min: 1, max: 3 }),
  /** Rooms that two writers both believe they own (each pins the room to itself). */
  disputed: fc.array(fc.boolean(), { minLength: 3, maxLength: 3 }),
  /** Sends run wave by wave; the sends of a wave run concurrently. */
  waves: fc.array(fc.array(sendArb, { minLength: 1, maxLength: 12 }), { minLength: 1, maxLength: 5 }),
})

function eventFor(s: Send): NewEvent {
  const sender = s.who === 0 ? alice : (others[s.who - 1] as string)
  switch (s.action) {
    case 'message':
      return message(sender, `from ${sender}`)
    case 'join':
      return member(sender, sender, 'join')
    case 'leave':
      return member(sender, sender, 'leave')
    case 'topic':
      return { type: 'm.room.topic', state_key: '', sender, content: { topic: `by ${sender}` } }
  }
}

describe('persister DAG property', () => {
  let t: TestDatabase

  before(async () => {
    t = await createTestDatabase({ poolSize: 30 })
  })
  after(async () => {
    await t.drop()
  })

  it('should keep every room a single chain with increasing depths, exact forward extremities and unique stream orderings', async function () {
    this.timeout(120_000)
    await fc.assert(
      fc.asyncProperty(scenarioArb, async (scenario) => {
        const writers = Array.from({ length: scenario.writers }, (_, i) => `w${i}`)
        const roomIds = Array.from({ length: scenario.rooms }, () => newRoomId())
        const owner = createShardMap({ writers }).ownerOf
        // A disputed room's owner gets it by hashing; the next writer pins it to itself as well.
        const rivalOf = (room: string) => writers[(writers.indexOf(owner(room)) + 1) % writers.length] as string
        const persisters: Persister[] = await Promise.all(writers.map(async (writer) => {
          const pins: Record<string, string> = {}
          roomIds.forEach((room, i) => {
            if (scenario.disputed[i] === true && rivalOf(room) === writer) pins[room] = writer
          })
          return await startPersister(t.db, { writer, writers, pins })
        }))
        const believers = (room: string, i: number) =>
          persisters.filter((p) => p.writer === owner(room) || (scenario.disputed[i] === true && p.writer === rivalOf(room)))
        try {
          const answered = new Map<string, PersistedEvent[]>(roomIds.map((room) => [room, []]))
          for (const [i, room] of roomIds.entries()) {
            const creator = believers(room, i)[0] as Persister
            answered.get(room)!.push(...(await send(creator, room, ...createRoomEvents(alice, { joinRule: 'public' }))))
          }
          for (const wave of scenario.waves) {
            const results = await Promise.allSettled(
              wave.map(async (s) => {
                const roomIndex = s.room % roomIds.length
                const room = roomIds[roomIndex] as string
                const via = persisters[s.via % persisters.length] as Persister
                const shouldOwn = believers(room, roomIndex).includes(via)
                try {
                  const events = await send(via, room, eventFor(s))
                  expect(shouldOwn, `${via.writer} persisted to a room it does not own`).to.equal(true)
                  answered.get(room)!.push(...events)
                } catch (err) {
                  if (err instanceof NotOwnerError) expect(shouldOwn).to.equal(false)
                  else expect(err).to.be.instanceOf(RejectedEventError)
                }
              }),
            )
            for (const r of results) if (r.status === 'rejected') throw r.reason
          }

          for (const room of roomIds) {
            const dag = await roomDag(t.db, room)
            const ids = dag.events.map((e) => e.event_id)
            expect(new Set(ids)).to.deep.equal(new Set(answered.get(room)!.map((a) => a.event_id)))
            expect(dag.edges).to.have.length(ids.length - 1)
            const children = new Map<string, number>()
            for (const edge of dag.edges) children.set(edge.prev_event_id, (children.get(edge.prev_event_id) ?? 0) + 1)
            expect([...children.values()].every((n) => n === 1), 'a fork').to.equal(true)
            const byId = new Map(dag.events.map((e) => [e.event_id, e]))
            for (const edge of dag.edges) {
              const child = byId.get(edge.event_id)!
              const parent = byId.get(edge.prev_event_id)!
              expect(child.depth > parent.depth, 'depth increases along edges').to.equal(true)
              expect(child.stream_ordering > parent.stream_ordering, 'stream order follows the chain').to.equal(true)
            }
            const referenced = new Set(dag.edges.map((e) => e.prev_event_id))
            expect(dag.forward).to.deep.equal(ids.filter((id) => !referenced.has(id)).sort())
          }
          const orderings = await t.db
            .selectFrom('events')
            .select((eb) => [eb.fn.countAll<string>().as('n'), eb.fn.count<string>('stream_ordering').distinct().as('distinct')])
            .executeTakeFirstOrThrow()
          expect(orderings.n).to.equal(orderings.distinct)
        } finally {
          await Promise.all(persisters.map((p) => p.close()))
        }
      }),
      { numRuns: 15 },
    )
  })
})
