import { expect } from 'chai'
import fastify from 'fastify'
import type { FastifyInstance } from 'fastify'
import type { Persister } from '../../../persisters/persister.js'
import { replicationRoutes } from '../../../persisters/replication-routes.js'
import { createTestDatabase } from '../../support/db.js'
import type { TestDatabase } from '../../support/db.js'
import { createRoomEvents, eventCount, member, message, newRoomId, remotePdu, startPersister, user } from './harness.js'

const secret = 'a-replication-secret-of-enough-length'
const alice = user('alice')
const bob = user('bob')

describe('replication routes', () => {
  let t: TestDatabase
  let persister: Persister
  let app: FastifyInstance
  let roomId: string
  let otherRoom: string

  before(async () => {
    t = await createTestDatabase()
    otherRoom = newRoomId()
    persister = await startPersister(t.db, { writer: 'p1', writers: ['p1', 'p2'], pins: { [otherRoom]: 'p2' } })
    app = fastify()
    await app.register(replicationRoutes, { persister, replicationSecret: secret })
    await app.ready()
  })
  after(async () => {
    await app.close()
    await persister.close()
    await t.drop()
  })
  beforeEach(() => {
    roomId = newRoomId()
    while (roomId === otherRoom) roomId = newRoomId()
  })

  /** `authorization: null` sends no Authorization header. */
  function post(path: string, body: unknown, authorization: string | null = `Bearer ${secret}`) {
    return app.inject({
      method: 'POST',
      url: path,
      headers: authorization === null ? {} : { authorization },
      payload: body as object,
    })
  }

  async function ownedRoom(): Promise<string> {
    for (;;) {
      const id = newRoomId()
      const response = await post(`/_myelin/replication/persist/create-${id}`, { room_id: id, events: createRoomEvents(alice) })
      if (response.statusCode === 200) return id
      expect(response.statusCode).to.equal(421)
    }
  }

  it('should answer 401 M_UNAUTHORIZED without the secret, with a wrong one, or another scheme', async () => {
    const body = { room_id: roomId, events: [message(alice, 'x')] }
    for (const authorization of [null, 'Bearer wrong', `Bearer ${secret}x`, `Basic ${secret}`, secret]) {
      const response = await post('/_myelin/replication/persist/r1', body, authorization)
      expect(response.statusCode, String(authorization)).to.equal(401)
      expect(response.json()).to.include({ errcode: 'M_UNAUTHORIZED' })
    }
    const importResponse = await post('/_myelin/replication/import/r1', { room_id: roomId, pdus: [{}] }, null)
    expect(importResponse.statusCode).to.equal(401)
  })

  it('should answer 400 M_BAD_JSON for malformed bodies and M_NOT_JSON for invalid JSON', async () => {
    for (const body of [
      {},
      { room_id: roomId },
      { room_id: 'not-a-room', events: [message(alice, 'x')] },
      { room_id: roomId, events: [] },
      { room_id: roomId, events: [{ type: 'm.room.message', sender: alice }] },
      { room_id: roomId, events: 'x' },
      { room_id: roomId, events: [{ ...message(alice, 'x'), content: 'text' }] },
      { room_id: roomId, events: [{ ...message(alice, 'x'), origin_server_ts: -1 }] },
      { room_id: roomId, events: [{ ...message(alice, 'x'), txn: { deviceId: 'D' } }] },
    ]) {
      const response = await post('/_myelin/replication/persist/r2', body)
      expect(response.statusCode, JSON.stringify(body)).to.equal(400)
      expect(response.json().errcode).to.equal('M_BAD_JSON')
    }
    const invalid = await app.inject({
      method: 'POST',
      url: '/_myelin/replication/persist/r3',
      headers: { authorization: `Bearer ${secret}`, 'content-type': 'application/json' },
      payload: '{"room_id":',
    })
    expect(invalid.statusCode).to.equal(400)
    expect(invalid.json().errcode).to.equal('M_NOT_JSON')
  })

  it('should persist and answer stream orderings as strings, the same answer on retry', async () => {
    const id = await ownedRoom()
    const response = await post('/_myelin/replication/persist/send-1', { room_id: id, events: [message(alice, 'hi')] })
    expect(response.statusCode).to.equal(200)
    const body = response.json()
    expect(body.events).to.have.length(1)
    expect(body.events[0].event_id).to.match(/^\$/)
    expect(body.events[0].stream_ordering).to.match(/^[0-9]+$/)
    expect(body.events[0].writer).to.equal('p1')
    const retry = await post('/_myelin/replication/persist/send-1', { room_id: id, events: [message(alice, 'hi')] })
    expect(retry.json()).to.deep.equal(body)
  })

  it('should answer 421 MYELIN_NOT_OWNER with the owner', async () => {
    const response = await post('/_myelin/replication/persist/r4', { room_id: otherRoom, events: createRoomEvents(alice) })
    expect(response.statusCode).to.equal(421)
    expect(response.json()).to.include({ errcode: 'MYELIN_NOT_OWNER', owner: 'p2' })
  })

  it('should answer 403 M_FORBIDDEN with the reason and event index, 413 M_TOO_LARGE, 404 for unknown rooms', async () => {
    const id = await ownedRoom()
    const count = await eventCount(t.db, id)
    const forbidden = await post('/_myelin/replication/persist/r5', { room_id: id, events: [message(bob, 'not a member')] })
    expect(forbidden.statusCode).to.equal(403)
    expect(forbidden.json()).to.include({ errcode: 'M_FORBIDDEN', event_index: 0 })
    expect(forbidden.json().error).to.match(/is not joined to the room/)
    const kick = await post('/_myelin/replication/persist/r6', { room_id: id, events: [member(alice, alice, 'ban')] })
    expect(kick.statusCode).to.equal(403)
    const large = await post('/_myelin/replication/persist/r7', { room_id: id, events: [message(alice, 'x'.repeat(70_000))] })
    expect(large.statusCode).to.equal(413)
    expect(large.json().errcode).to.equal('M_TOO_LARGE')
    expect(await eventCount(t.db, id)).to.equal(count)
    let unknown = newRoomId()
    for (;;) {
      const response = await post('/_myelin/replication/persist/r8', { room_id: unknown, events: [message(alice, 'x')] })
      if (response.statusCode === 421) {
        unknown = newRoomId()
        continue
      }
      expect(response.statusCode).to.equal(404)
      expect(response.json().errcode).to.equal('M_NOT_FOUND')
      break
    }
  })

  it('should answer a persist_batch per request, in order, as the single route would, and the same on retry', async () => {
    const [a, b] = [await ownedRoom(), await ownedRoom()]
    const before = await eventCount(t.db, a)
    const requests = [
      { request_id: 'batch-1', room_id: a, events: [message(alice, 'one')] },
      { request_id: 'batch-2', room_id: otherRoom, events: [message(alice, 'elsewhere')] },
      { request_id: 'batch-3', room_id: a, events: [message(bob, 'not a member')] },
      { request_id: 'batch-4', room_id: b, events: [message(alice, 'two')] },
      { request_id: 'batch-5', room_id: a, events: [message(alice, 'three')] },
    ]
    const response = await post('/_myelin/replication/persist_batch', { requests })
    expect(response.statusCode).to.equal(200)
    const results = response.json().results as { status: number; body: Record<string, unknown> }[]
    expect(results.map((r) => r.status)).to.deep.equal([200, 421, 403, 200, 200])
    expect(results[1]!.body).to.include({ errcode: 'MYELIN_NOT_OWNER', owner: 'p2' })
    expect(results[2]!.body).to.include({ errcode: 'M_FORBIDDEN', event_index: 0 })
    expect(await eventCount(t.db, a)).to.equal(before + 2)
    const retry = await post('/_myelin/replication/persist_batch', { requests })
    expect(retry.json().results).to.deep.equal(results)
    expect(await eventCount(t.db, a), 'a retried batch stores nothing twice').to.equal(before + 2)
    const single = await post('/_myelin/replication/persist/batch-4', { room_id: b, events: [message(alice, 'two')] })
    expect(single.json(), 'the single route knows the batch item by its request ID').to.deep.equal(results[3]!.body)
  })

  it('should refuse a malformed or oversized persist_batch as a whole, and without the secret', async () => {
    const id = await ownedRoom()
    const item = (n: number) => ({ request_id: `big-${n}`, room_id: id, events: [message(alice, `m${n}`)] })
    const count = await eventCount(t.db, id)
    expect((await post('/_myelin/replication/persist_batch', { requests: [] })).statusCode).to.equal(400)
    expect((await post('/_myelin/replication/persist_batch', { requests: [{ room_id: id, events: [message(alice, 'x')] }] })).statusCode).to.equal(400)
    expect((await post('/_myelin/replication/persist_batch', { requests: Array.from({ length: 65 }, (_, n) => item(n)) })).statusCode).to.equal(400)
    expect((await post('/_myelin/replication/persist_batch', { requests: [item(0)] }, null)).statusCode).to.equal(401)
    expect(await eventCount(t.db, id), 'nothing of a refused batch is stored').to.equal(count)
  })

  it('should import PDUs through the import route', async () => {
    const id = await ownedRoom()
    const bad = await post('/_myelin/replication/import/i1', { room_id: id, pdus: [{ type: 'x' }] })
    expect(bad.statusCode).to.equal(400)
    expect(bad.json()).to.include({ errcode: 'M_BAD_JSON', event_index: 0 })
    const missing = await post('/_myelin/replication/import/i2', { room_id: id })
    expect(missing.statusCode).to.equal(400)
    const pdu = remotePdu(id, { prevEvents: ['$older'], depth: 1 })
    const ok = await post('/_myelin/replication/import/i3', { room_id: id, pdus: [pdu] })
    expect(ok.statusCode).to.equal(200)
    expect(ok.json().events[0].event_id).to.equal(pdu['event_id'])
    expect(ok.json().events[0].stream_ordering).to.match(/^-[0-9]+$/)
  })

})
