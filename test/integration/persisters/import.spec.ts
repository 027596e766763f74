import { expect } from 'chai'
import { RejectedEventError } from '../../../persisters/persist-errors.js'
import type { Persister } from '../../../persisters/persister.js'
import { getBackwardExtremities, getCurrentState, getEvent, getForwardExtremities, getRoomHead } from '../../../storage/events/event-store.js'
import { isStorageError } from '../../../storage/errors.js'
import { createTestDatabase } from '../../support/db.js'
import type { TestDatabase } from '../../support/db.js'
import { createRoomEvents, eventCount, message, newRoomId, rejection, remote, remotePdu, send, startPersister, user } from './harness.js'

const alice = user('alice')
describe('persister import', () => {
  let t: TestDatabase
  let persister: Persister
  let roomId: string

  beforeEach(async () => {
    t = await createTestDatabase()
    persister = await startPersister(t.db, { writer: 'p1' })
    roomId = newRoomId()
    await send(persister, roomId, ...createRoomEvents(alice, { name: 'live name' }))
  })
  afterEach(async () => {
    await persister.close()
    await t.drop()
  })

  it('should store history with negative stream orderings and backward extremities, leaving current state alone', async () => {
    const stateBefore = await getCurrentState(t.db, roomId)
    const forwardBefore = await getForwardExtremities(t.db, roomId)
    const headBefore = await getRoomHead(t.db, roomId)
    const older = remotePdu(roomId, { prevEvents: [], depth: 1 }) // not imported yet: a backward extremity
    const h1 = remotePdu(roomId, { prevEvents: [older['event_id'] as string], depth: 2 })
    const h2 = remotePdu(roomId, { type: 'm.room.name', stateKey: '', content: { name: 'old name' }, prevEvents: [h1['event_id'] as string], depth: 3 })
    const h3 = remotePdu(roomId, { type: 'm.room.member', stateKey: remote, content: { membership: 'join' }, prevEvents: [h2['event_id'] as string], depth: 4 })

    const answers = await persister.importEvents(roomId, [h3, h1, h2])
    expect(answers.map((a) => a.event_id)).to.deep.equal([h3['event_id'], h1['event_id'], h2['event_id']])
    expect(answers.every((a) => a.stream_ordering < 0n && a.writer === 'p1')).to.equal(true)
    const [s3, s1, s2] = answers.map((a) => a.stream_ordering)
    expect(s3! > s2! && s2! > s1!, 'deeper events sort later').to.equal(true)

    expect(await getBackwardExtremities(t.db, roomId)).to.deep.equal([older['event_id']])
    expect(await getCurrentState(t.db, roomId)).to.deep.equal(stateBefore)
    expect(await getForwardExtremities(t.db, roomId)).to.deep.equal(forwardBefore)
    expect(await getRoomHead(t.db, roomId)).to.deep.equal(headBefore)
    const stored = await getEvent(t.db, h2['event_id'] as string)
    expect(stored?.pdu).to.deep.equal(h2)
    const stateRow = await t.db.selectFrom('state_events').selectAll().where('event_id', '=', h2['event_id'] as string).executeTakeFirst()
    expect(stateRow).to.include({ type: 'm.room.name', state_key: '' })
    const membership = await t.db.selectFrom('room_memberships').selectAll().where('event_id', '=', h3['event_id'] as string).executeTakeFirst()
    expect(membership).to.include({ user_id: remote, membership: 'join', stream_ordering: s3 })

    // Filling the gap: the missing event stops being a backward extremity; it has no prevs, so none replace it.
    const [filled] = await persister.importEvents(roomId, [older])
    expect(filled!.stream_ordering < s1!).to.equal(true)
    expect(await getBackwardExtremities(t.db, roomId)).to.deep.equal([])

    // Live sends still link to the live extremity, never to imported history.
    const [live] = await send(persister, roomId, message(alice, 'live'))
    expect(live!.stream_ordering > 0n).to.equal(true)
    expect((await getEvent(t.db, live!.event_id))!.pdu['prev_events']).to.deep.equal([forwardBefore[0]!.eventId])
  })

  it('should answer a repeated import with the stored positions and store nothing twice', async () => {
    const pdu = remotePdu(roomId, { prevEvents: ['$gone'], depth: 1 })
    const first = await persister.importEvents(roomId, [pdu, pdu])
    expect(first[0]).to.deep.equal(first[1])
    const count = await eventCount(t.db, roomId)
    expect(await persister.importEvents(roomId, [pdu])).to.deep.equal([first[0]])
    expect(await eventCount(t.db, roomId)).to.equal(count)
  })

  it('should refuse a whole import when one PDU fails its content hash', async () => {
    const good = remotePdu(roomId, { prevEvents: [], depth: 1 })
    const tampered = { ...remotePdu(roomId, { prevEvents: [], depth: 2 }), content: { body: 'changed' } }
    const count = await eventCount(t.db, roomId)
    const err = await rejection(persister.importEvents(roomId, [good, tampered]))
    expect(err).to.be.instanceOf(RejectedEventError)
    expect((err as RejectedEventError).eventIndex).to.equal(1)
    expect((err as RejectedEventError).code).to.equal('ES_BAD_EVENT')
    expect((err as RejectedEventError).reason).to.match(/content hash/)
    expect(await eventCount(t.db, roomId)).to.equal(count)
  })

  it('should refuse a PDU whose event_id is not its reference hash, or that belongs to another room', async () => {
    const pdu = remotePdu(roomId, { prevEvents: [], depth: 1 })
    const wrongId = await rejection(persister.importEvents(roomId, [{ ...pdu, event_id: '$forged' }]))
    expect((wrongId as RejectedEventError).reason).to.match(/does not match the reference hash/)
    const otherRoom = await rejection(persister.importEvents(roomId, [remotePdu(newRoomId(), { prevEvents: [], depth: 1 })]))
    expect((otherRoom as RejectedEventError).reason).to.match(/room_id must be/)
  })

  it('should refuse imports into a room that does not exist', async () => {
    const unknown = newRoomId()
    const err = await rejection(persister.importEvents(unknown, [remotePdu(unknown, { prevEvents: [], depth: 1 })]))
    expect(isStorageError(err, 'ES_ROOM_NOT_FOUND')).to.equal(true)
  })
})
