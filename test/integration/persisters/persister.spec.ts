import { expect } from 'chai'
import { sql } from 'kysely'
import { Registry } from 'prom-client'
import { NotOwnerError, RejectedEventError } from '../../../persisters/persist-errors.js'
import type { Persister } from '../../../persisters/persister.js'
import { computeEventId } from '../../../storage/events/event-hashes.js'
import { getCurrentState, getEvent, getForwardExtremities, getRoomHead } from '../../../storage/events/event-store.js'
import { parseSigningKey, verifyEventSignature } from '../../../storage/events/signing.js'
import { isStorageError } from '../../../storage/errors.js'
import { createTestDatabase } from '../../support/db.js'
import type { TestDatabase } from '../../support/db.js'
import {
  createRoomEvents,
  eventCount,
  member,
  message,
  newRoomId,
  rejection,
  roomDag,
  send,
  serverName,
  signingKey,
  startPersister,
  user,
} from './harness.js'

const alice = user('alice')
const bob = user('bob')

describe('persister', () => {
  let t: TestDatabase
  let persister: Persister

  beforeEach(async () => {
    t = await createTestDatabase()
    persister = await startPersister(t.db, { writer: 'p1' })
  })
  afterEach(async () => {
    await persister.close()
    await t.drop()
  })

  describe('createRoom', () => {
    it('should store the initial events as one chain with the room head owned by this writer', async () => {
      const roomId = newRoomId()
      const answers = await send(persister, roomId, ...createRoomEvents(alice, { name: 'Lobby', invite: [bob] }))
      expect(answers).to.have.length(7)
      expect(answers.every((a) => a.writer === 'p1')).to.equal(true)
      const orderings = answers.map((a) => a.stream_ordering)
      expect([...orderings].sort((a, b) => (a < b ? -1 : 1))).to.deep.equal(orderings)

      const head = await getRoomHead(t.db, roomId)
      expect(head).to.include({ owner: 'p1', epoch: 1n, maxDepth: 7n, lastStreamOrdering: orderings[6], roomVersion: '11', creator: alice })

      const dag = await roomDag(t.db, roomId)
      expect(dag.events.map((e) => e.depth)).to.deep.equal([1n, 2n, 3n, 4n, 5n, 6n, 7n])
      expect(dag.forward).to.deep.equal([answers[6]?.event_id])
      for (let i = 1; i < answers.length; i++) {
        expect(dag.edges).to.deep.include({ event_id: answers[i]?.event_id, prev_event_id: answers[i - 1]?.event_id })
      }
      expect(dag.edges).to.have.length(6)

      const state = await getCurrentState(t.db, roomId)
      expect(state.map((s) => `${s.type}|${s.stateKey}`).sort()).to.deep.equal(
        [
          'm.room.create|',
          `m.room.member|${alice}`,
          `m.room.member|${bob}`,
          'm.room.power_levels|',
          'm.room.join_rules|',
          'm.room.history_visibility|',
          'm.room.name|',
        ].sort(),
      )
      expect(state.find((s) => s.stateKey === bob)?.membership).to.equal('invite')
      const memberships = await t.db.selectFrom('room_memberships').selectAll().where('room_id', '=', roomId).orderBy('stream_ordering').execute()
      expect(memberships.map((m) => [m.user_id, m.membership])).to.deep.equal([
        [alice, 'join'],
        [bob, 'invite'],
      ])
    })

    it('should build signed room v11 PDUs whose event IDs are their reference hashes and auth_events their auth state', async () => {
      const roomId = newRoomId()
      const answers = await send(persister, roomId, ...createRoomEvents(alice))
      const [create, join, powerLevels, joinRules] = answers
      const msg = (await send(persister, roomId, message(alice, 'hello')))[0]
      const stored = await getEvent(t.db, msg!.event_id)
      const { event_id: eventId, ...pdu } = stored!.pdu
      expect(computeEventId(pdu)).to.equal(eventId)
      const key = parseSigningKey(signingKey)
      expect(verifyEventSignature(pdu, serverName, key.keyId, key.publicKeyBase64)).to.equal(true)
      expect(pdu['auth_events']).to.have.members([create?.event_id, powerLevels?.event_id, join?.event_id])
      expect(pdu['prev_events']).to.deep.equal([answers[4]?.event_id])
      expect(pdu['depth']).to.equal(6)
      expect(pdu['room_id']).to.equal(roomId)

      const invite = (await send(persister, roomId, member(alice, bob, 'invite')))[0]
      const invitePdu = (await getEvent(t.db, invite!.event_id))!.pdu
      expect(invitePdu['auth_events']).to.have.members([create?.event_id, powerLevels?.event_id, join?.event_id, joinRules?.event_id])
    })

    it('should refuse events for a room that does not exist', async () => {
      const err = await rejection(send(persister, newRoomId(), message(alice, 'hi')))
      expect(err).to.be.instanceOf(RejectedEventError)
      expect((err as RejectedEventError).code).to.equal('ES_ROOM_NOT_FOUND')
    })

    it('should refuse a second m.room.create', async () => {
      const roomId = newRoomId()
      await send(persister, roomId, ...createRoomEvents(alice))
      const err = await rejection(send(persister, roomId, { type: 'm.room.create', state_key: '', sender: alice, content: {} }))
      expect((err as RejectedEventError).code).to.equal('ES_FORBIDDEN')
      expect((err as Error).message).to.match(/already has an m.room.create/)
    })
  })

  describe('batching', () => {
    it('should persist concurrent requests of a room in few transactions, in order, as one chain', async () => {
      const registry = new Registry()
      const p = await startPersister(t.db, { writer: 'p1', registry })
      try {
        const roomId = newRoomId()
        await send(p, roomId, ...createRoomEvents(alice))
        const answers = await Promise.all(Array.from({ length: 50 }, (_, i) => send(p, roomId, message(alice, `m${i}`))))
        const orderings = answers.map((a) => a[0]!.stream_ordering)
        expect([...orderings].sort((a, b) => (a < b ? -1 : 1))).to.deep.equal(orderings)
        const dag = await roomDag(t.db, roomId)
        expect(dag.events).to.have.length(55)
        expect(dag.forward).to.deep.equal([answers[49]![0]!.event_id])
        const batches = (await registry.getSingleMetric('myelin_persist_batch_size')!.get()).values.find(
          (v) => (v as { metricName?: string }).metricName === 'myelin_persist_batch_size_count',
        )
        expect(batches?.value).to.be.lessThan(10)
        const persisted = await registry.getSingleMetric('myelin_events_persisted_total')!.get()
        expect(persisted.values[0]?.value).to.equal(55)
        expect(await registry.metrics()).to.include('myelin_room_queue_depth')
      } finally {
        await p.close()
      }
    })

    it('should commit the batches of rooms ready together in shared transactions, each room its own chain', async () => {
      const registry = new Registry()
      const p = await startPersister(t.db, { writer: 'p1', registry })
      try {
        const rooms = Array.from({ length: 12 }, () => newRoomId())
        await Promise.all(rooms.map((roomId) => send(p, roomId, ...createRoomEvents(alice))))
        const answers = await Promise.all(rooms.flatMap((roomId) => Array.from({ length: 5 }, (_, i) => send(p, roomId, message(alice, `${roomId} m${i}`)))))
        expect(answers.flat()).to.have.length(60)
        for (const roomId of rooms) {
          const dag = await roomDag(t.db, roomId)
          // createRoom's 5 events, then the 5 messages.
          expect(dag.events).to.have.length(10)
          expect(dag.forward).to.have.length(1)
          expect(dag.edges).to.have.length(9)
          expect(new Set(dag.events.map((e) => e.depth)).size).to.equal(10)
        }
        const orderings = answers.flat().map((a) => a.stream_ordering)
        expect(new Set(orderings).size).to.equal(orderings.length)
        const metric = (await registry.getSingleMetric('myelin_persist_group_rooms')!.get()).values as { metricName?: string; value: number }[]
        const total = (suffix: string) => metric.find((v) => v.metricName === `myelin_persist_group_rooms_${suffix}`)?.value ?? 0
        // 24 room batches (12 creations, then 12 rooms of messages) in fewer transactions than batches.
        expect(total('sum')).to.be.at.least(24)
        expect(total('count')).to.be.lessThan(total('sum'))
      } finally {
        await p.close()
      }
    })

    it('should not let a room whose batch cannot commit fail the other rooms of its group', async () => {
      const registry = new Registry()
      // One transaction at a time: the first room runs alone, the five others wait and share one.
      const p = await startPersister(t.db, { writer: 'p1', registry, transactionConcurrency: 1 })
      try {
        const rooms = Array.from({ length: 6 }, () => newRoomId())
        for (const roomId of rooms) await send(p, roomId, ...createRoomEvents(alice))
        const broken = rooms[5] as string
        await sql`CREATE FUNCTION refuse_broken_room() RETURNS trigger LANGUAGE plpgsql AS $$
                  BEGIN IF NEW.room_id = ${sql.lit(broken)} THEN RAISE EXCEPTION 'this room is broken'; END IF; RETURN NEW; END $$`.execute(t.db)
        await sql`CREATE TRIGGER refuse_broken_room BEFORE INSERT ON event_json FOR EACH ROW EXECUTE FUNCTION refuse_broken_room()`.execute(t.db)
        const outcomes = await Promise.allSettled(rooms.map((roomId) => send(p, roomId, message(alice, 'after the break'))))
        expect(outcomes.slice(0, 5).map((o) => o.status)).to.deep.equal(Array(5).fill('fulfilled'))
        expect(outcomes[5]?.status).to.equal('rejected')
        expect(isStorageError((outcomes[5] as PromiseRejectedResult).reason, 'ES_UNAVAILABLE')).to.equal(true)
        for (const roomId of rooms.slice(0, 5)) expect(await eventCount(t.db, roomId)).to.equal(6)
        expect(await eventCount(t.db, broken)).to.equal(5)
        // The shared transaction failed, then its rooms committed one by one.
        const failed = (await registry.getSingleMetric('myelin_persist_duration_seconds')!.get()).values.find(
          (v) => (v as { metricName?: string }).metricName === 'myelin_persist_duration_seconds_count' && v.labels['outcome'] === 'error',
        )
        expect(failed?.value).to.equal(1)
        expect(await registry.metrics()).to.match(/myelin_persist_group_rooms_bucket\{le="1",writer="p1"\} 11\n/)
      } finally {
        await p.close()
      }
    })

    it('should plan a batch while it waits for the transaction in flight, and commit it as planned', async () => {
      // A clock the test moves. Room B's one event is too little to start a transaction beside
      // room A's (fewer than parallelTransactionEvents wait), so it waits while A's statement is
      // held up by a lock; it carries the time of its submission, so it was built and signed
      // while it waited, not once A had committed.
      let now = 1_000_000
      const p = await startPersister(t.db, { writer: 'p1', clock: () => now })
      const release = Promise.withResolvers<void>()
      const locked = Promise.withResolvers<void>()
      try {
        const [roomA, roomB] = [newRoomId(), newRoomId()]
        for (const roomId of [roomA, roomB]) {
          await send(p, roomId, ...createRoomEvents(alice))
          await send(p, roomId, message(alice, 'caches the snapshot'))
        }
        const holder = t.db.transaction().execute(async (trx) => {
          await sql`SELECT 1 FROM rooms WHERE room_id = ${roomA} FOR UPDATE`.execute(trx)
          locked.resolve()
          await release.promise
        })
        await locked.promise
        const held = send(p, roomA, message(alice, 'held up'))
        await new Promise((r) => setTimeout(r, 100))
        const waiting = send(p, roomB, message(alice, 'waits for the slot'))
        await new Promise((r) => setTimeout(r, 100))
        now = 2_000_000
        release.resolve()
        await holder
        const [[a], [b]] = await Promise.all([held, waiting])
        expect((await getEvent(t.db, a!.event_id))!.pdu['origin_server_ts']).to.equal(1_000_000)
        const { event_id: eventId, ...pdu } = (await getEvent(t.db, b!.event_id))!.pdu
        expect(pdu['origin_server_ts']).to.equal(1_000_000)
        expect(computeEventId(pdu)).to.equal(eventId)
        expect(b!.stream_ordering > a!.stream_ordering).to.equal(true)
      } finally {
        release.resolve()
        await p.close()
      }
    })

    it('should fail only the request whose event is refused, and keep its earlier events', async () => {
      const roomId = newRoomId()
      await send(persister, roomId, ...createRoomEvents(alice, { joinRule: 'public' }))
      await send(persister, roomId, member(bob, bob, 'join'))
      const before = await eventCount(t.db, roomId)
      const [ok1, refused, ok2] = await Promise.allSettled([
        send(persister, roomId, message(alice, 'one')),
        send(persister, roomId, message(bob, 'two'), member(bob, alice, 'leave'), message(bob, 'never')),
        send(persister, roomId, message(alice, 'three')),
      ])
      expect(ok1.status).to.equal('fulfilled')
      expect(ok2.status).to.equal('fulfilled')
      expect(refused.status).to.equal('rejected')
      const err = (refused as PromiseRejectedResult).reason as RejectedEventError
      expect(err).to.be.instanceOf(RejectedEventError)
      expect(err.code).to.equal('ES_FORBIDDEN')
      expect(err.eventIndex).to.equal(1)
      expect(err.message).to.match(/^event 1: /)
      expect(await eventCount(t.db, roomId)).to.equal(before + 3)
      const bodies = await t.db.selectFrom('event_json').select('json').where('room_id', '=', roomId).execute()
      expect(bodies.some((b) => b.json.includes('"never"'))).to.equal(false)
      expect(bodies.some((b) => b.json.includes('"two"'))).to.equal(true)
    })

    it('should refuse an event above 65,536 bytes with ES_EVENT_TOO_LARGE and store nothing of it', async () => {
      const roomId = newRoomId()
      await send(persister, roomId, ...createRoomEvents(alice))
      const before = await eventCount(t.db, roomId)
      const err = await rejection(send(persister, roomId, message(alice, 'x'.repeat(65_536))))
      expect(isStorageError(err, 'ES_EVENT_TOO_LARGE')).to.equal(true)
      expect(await eventCount(t.db, roomId)).to.equal(before)
      const fits = await send(persister, roomId, message(alice, 'x'.repeat(60_000)))
      expect(fits).to.have.length(1)
    })
  })

  describe('ownership', () => {
    it('should answer ES_NOT_OWNER with the owner when the shard map gives the room to another writer', async () => {
      const roomId = newRoomId()
      const p = await startPersister(t.db, { writer: 'p1', writers: ['p1', 'p2'], pins: { [roomId]: 'p2' } })
      try {
        const err = await rejection(send(p, roomId, ...createRoomEvents(alice)))
        expect(err).to.be.instanceOf(NotOwnerError)
        expect((err as NotOwnerError).owner).to.equal('p2')
        expect((err as NotOwnerError).code).to.equal('ES_NOT_OWNER')
        expect(await getRoomHead(t.db, roomId)).to.equal(undefined)
      } finally {
        await p.close()
      }
    })
  })

  describe('idempotency', () => {
    it('should answer a repeated client txn with the original event, sequentially and within one batch', async () => {
      const roomId = newRoomId()
      await send(persister, roomId, ...createRoomEvents(alice))
      const txn = { deviceId: 'DEV', txnId: 't1' }
      const [first] = await send(persister, roomId, message(alice, 'once', txn))
      const [again] = await send(persister, roomId, message(alice, 'once', txn))
      expect(again).to.deep.equal(first)
      const racing = await Promise.all([
        send(persister, roomId, message(alice, 'race', { deviceId: 'DEV', txnId: 't2' })),
        send(persister, roomId, message(alice, 'race', { deviceId: 'DEV', txnId: 't2' })),
        send(persister, roomId, message(alice, 'race', { deviceId: 'OTHER', txnId: 't2' })),
      ])
      expect(racing[0]).to.deep.equal(racing[1])
      expect(racing[2]![0]!.event_id).to.not.equal(racing[0]![0]!.event_id)
      const bodies = await t.db.selectFrom('event_json').select('json').where('room_id', '=', roomId).execute()
      expect(bodies.filter((b) => b.json.includes('"once"'))).to.have.length(1)
      expect(bodies.filter((b) => b.json.includes('"race"'))).to.have.length(2)
    })

    it('should answer a repeated txn and a repeated request ID with the first answer after a restart', async () => {
      const roomId = newRoomId()
      await send(persister, roomId, ...createRoomEvents(alice))
      const request = { requestId: 'retry-me', roomId, events: [message(alice, 'a'), message(alice, 'b')] }
      const first = await persister.persist(request)
      const [txnFirst] = await send(persister, roomId, message(alice, 'txn', { deviceId: 'D', txnId: 'x' }))
      await persister.close()

      persister = await startPersister(t.db, { writer: 'p1' })
      const count = await eventCount(t.db, roomId)
      expect(await persister.persist(request)).to.deep.equal(first)
      expect(await persister.persist({ ...request, events: [message(alice, 'different'), message(alice, 'body')] })).to.deep.equal(first)
      expect(await send(persister, roomId, message(alice, 'txn', { deviceId: 'D', txnId: 'x' }))).to.deep.equal([txnFirst])
      expect(await eventCount(t.db, roomId)).to.equal(count)
    })

    it('should join concurrent calls with the same request ID', async () => {
      const roomId = newRoomId()
      await send(persister, roomId, ...createRoomEvents(alice))
      const request = { requestId: 'twice', roomId, events: [message(alice, 'x')] }
      const [a, b] = await Promise.all([persister.persist(request), persister.persist(request)])
      expect(a).to.deep.equal(b)
      expect(await eventCount(t.db, roomId)).to.equal(6)
    })

    it('should resume a partly refused request after its stored prefix when retried', async () => {
      const roomId = newRoomId()
      await send(persister, roomId, ...createRoomEvents(alice))
      const request = { requestId: 'partial', roomId, events: [message(alice, 'kept'), message(bob, 'refused'), message(alice, 'after')] }
      const err1 = (await rejection(persister.persist(request))) as RejectedEventError
      const count = await eventCount(t.db, roomId)
      const err2 = (await rejection(persister.persist(request))) as RejectedEventError
      expect(err1.eventIndex).to.equal(1)
      expect(err2.eventIndex).to.equal(1)
      expect(await eventCount(t.db, roomId)).to.equal(count)
    })

    it('should store no answer for a request that asks for none, and still deduplicate its client txn', async () => {
      const roomId = newRoomId()
      await send(persister, roomId, ...createRoomEvents(alice))
      const answers = () => t.db.selectFrom('replication_requests').select('request_id').where('request_id', 'in', ['kept', 'once', 'once-again']).execute()
      await persister.persist({ requestId: 'kept', roomId, events: [message(alice, 'recorded')] })
      const txn = { deviceId: 'D', txnId: 'unrecorded' }
      const [first] = await persister.persist({ requestId: 'once', roomId, events: [message(alice, 'not recorded', txn)], recordAnswer: false })
      // The client's retry is a new request (with a new ID), answered from its transaction ID.
      const [retried] = await persister.persist({ requestId: 'once-again', roomId, events: [message(alice, 'not recorded', txn)], recordAnswer: false })
      expect(retried).to.deep.equal(first)
      expect((await answers()).map((row) => row.request_id)).to.deep.equal(['kept'])
      expect(await eventCount(t.db, roomId)).to.equal(7)
    })

    it('should answer a retry from the database even after the room moved to another writer', async () => {
      const roomId = newRoomId()
      await send(persister, roomId, ...createRoomEvents(alice))
      const request = { requestId: 'moved', roomId, events: [message(alice, 'x')] }
      const first = await persister.persist(request)
      const p = await startPersister(t.db, { writer: 'p1', writers: ['p1', 'p2'], pins: { [roomId]: 'p2' } })
      try {
        expect(await p.persist(request)).to.deep.equal(first)
        expect(await rejection(p.persist({ ...request, requestId: 'new' }))).to.be.instanceOf(NotOwnerError)
      } finally {
        await p.close()
      }
    })
  })

  describe('close', () => {
    it('should answer every queued request before resolving, then refuse new ones', async () => {
      const roomId = newRoomId()
      await send(persister, roomId, ...createRoomEvents(alice))
      const pending = Array.from({ length: 20 }, (_, i) => send(persister, roomId, message(alice, `m${i}`)))
      expect(persister.queueDepth().requests).to.be.greaterThan(0)
      await persister.close()
      const settled = await Promise.allSettled(pending)
      expect(settled.every((s) => s.status === 'fulfilled')).to.equal(true)
      expect(persister.queueDepth()).to.deep.equal({ requests: 0, rooms: 0 })
      expect(isStorageError(await rejection(send(persister, roomId, message(alice, 'late'))), 'ES_UNAVAILABLE')).to.equal(true)
      expect((await getForwardExtremities(t.db, roomId))[0]?.depth).to.equal(25n)
    })
  })
})
