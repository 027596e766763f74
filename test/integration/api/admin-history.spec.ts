import { expect } from 'chai'
import fc from 'fast-check'
import type { LightMyRequestResponse } from 'fastify'
import { roomPlugins } from '../../../api/room-plugins.js'
import { sql } from 'kysely'
import { lockRoomHistory, purgeRoom, withClaim } from '../../../storage/admin.js'
import { runHistoryPurge, startHistoryPurge } from '../../../storage/history-purge.js'
import { startApi, v3, type ApiHarness, type Session } from './api-harness.js'
import { createRoom, enc, sendEvents, text, type ClientEvent } from './read-fixtures.js'

const admin1 = '/_synapse/admin/v1'

describe("api purge history (Synapse's admin API)", function () {
  this.timeout(120_000)
  let h: ApiHarness
  let root: Session
  let alice: Session
  before(async () => {
    h = await startApi({ roomRoutes: (services) => roomPlugins(services) })
    root = await h.registerAdmin('ph_root')
    alice = await h.register('ph_alice')
  })
  after(() => h.close())

  const ok = async <T = Record<string, unknown>>(res: Promise<LightMyRequestResponse>, status = 200): Promise<T> => {
    const answer = await res
    expect(answer.statusCode, answer.body).to.equal(status)
    return answer.json<T>()
  }
  const purge = (roomId: string, body: Record<string, unknown>, eventId?: string, session = root) =>
    h.call('POST', `${admin1}/purge_history/${enc(roomId)}${eventId === undefined ? '' : `/${enc(eventId)}`}`, { token: session.access_token, body })
  /** Starts a purge and waits for it to end; its final status. */
  const purged = async (roomId: string, body: Record<string, unknown>, eventId?: string) => {
    const { purge_id } = await ok<{ purge_id: string }>(purge(roomId, body, eventId))
    for (;;) {
      const status = await ok<{ status: string; deleted: number }>(h.call('GET', `${admin1}/purge_history_status/${purge_id}`, { token: root.access_token }))
      if (status.status !== 'active') return status
      await new Promise((r) => setTimeout(r, 20))
    }
  }
  /** Every event `/messages` pages back to from now, oldest first. */
  const history = async (roomId: string): Promise<ClientEvent[]> => {
    const events: ClientEvent[] = []
    let from: string | undefined
    do {
      const page = await ok<{ chunk: ClientEvent[]; end?: string }>(
        h.call('GET', `${v3}/rooms/${enc(roomId)}/messages?dir=b&limit=7${from === undefined ? '' : `&from=${enc(from)}`}`, { token: alice.access_token }),
      )
      events.unshift(...[...page.chunk].reverse())
      from = page.end
    } while (from !== undefined)
    return events
  }
  const bodies = (events: readonly ClientEvent[]) => events.filter((e) => e.type === 'm.room.message').map((e) => e.content['body'])
  const ids = (events: readonly { event_id: string }[]) => events.map((e) => e.event_id)

  it('should delete the messages before the point, keep the state and the rest, and end /messages there', async () => {
    const roomId = await createRoom(h, alice.user_id, { joinRule: 'public' })
    const sent = await sendEvents(h, roomId, ...Array.from({ length: 6 }, (_, i) => text(alice.user_id, `m${i + 1}`)))
    const topic = await sendEvents(h, roomId, { type: 'm.room.topic', state_key: '', sender: alice.user_id, content: { topic: 'kept' } })
    const later = await sendEvents(h, roomId, ...Array.from({ length: 4 }, (_, i) => text(alice.user_id, `m${i + 7}`)))
    const before = await history(roomId)
    const point = later[1]!.event_id // m8

    expect(await purged(roomId, { delete_local_events: true }, point)).to.deep.equal({ status: 'complete', deleted: 7 })
    expect(await h.metrics.getSingleMetricAsString('myelin_history_purged_events_total')).to.match(/^myelin_history_purged_events_total 7$/m)
    const after = await history(roomId)
    expect(bodies(after)).to.deep.equal(['m8', 'm9', 'm10'])
    // Every state event stays, the topic sent among the purged messages included, in order.
    const stateBefore = before.filter((e) => e.state_key !== undefined)
    expect(ids(after.filter((e) => e.state_key !== undefined))).to.deep.equal(ids(stateBefore))
    expect(ids(stateBefore)).to.include(topic[0]!.event_id)
    expect((await h.call('GET', `${v3}/rooms/${enc(roomId)}/event/${enc(sent[2]!.event_id)}`, { token: alice.access_token })).statusCode).to.equal(404)
    expect((await ok<{ topic: string }>(h.call('GET', `${v3}/rooms/${enc(roomId)}/state/m.room.topic/`, { token: alice.access_token }))).topic).to.equal('kept')

    // The DAG: m6 and m7, which the kept topic and m8 name, are backward extremities now;
    // nothing of the purged events is left.
    const db = h.t.db
    const backward = await db.selectFrom('event_backward_extremities').select('event_id').where('room_id', '=', roomId).execute()
    expect(ids(backward).sort()).to.deep.equal([sent[5]!.event_id, later[0]!.event_id].sort())
    const gone = [...sent, later[0]!].map((e) => e.event_id)
    for (const table of ['events', 'event_json', 'event_edges'] as const) {
      expect(await db.selectFrom(table).select('event_id').where('event_id', 'in', gone).execute(), table).to.deep.equal([])
    }
    // The room goes on: a new message is written after its latest and synced.
    const next = await sendEvents(h, roomId, text(alice.user_id, 'm11'))
    expect(bodies(await history(roomId))).to.deep.equal(['m8', 'm9', 'm10', 'm11'])
    const edges = await db.selectFrom('event_edges').select('prev_event_id').where('event_id', '=', next[0]!.event_id).execute()
    expect(edges.map((e) => e.prev_event_id)).to.deep.equal([later[3]!.event_id])
  })

  /** Makes events look sent by another server's user, as imported events are (live sends are all local). */
  const fromElsewhere = (eventIds: readonly string[]) => h.t.db.updateTable('events').set({ sender: '@eve:elsewhere.test' }).where('event_id', 'in', eventIds).execute()

  it("should keep this server's users' events unless told, purge by time, and never the latest event", async () => {
    const roomId = await createRoom(h, alice.user_id, { joinRule: 'public' })
    const early = await sendEvents(h, roomId, text(alice.user_id, 'a1'), text(alice.user_id, 'e1'), text(alice.user_id, 'a2'), text(alice.user_id, 'e2'))
    await new Promise((r) => setTimeout(r, 5))
    const cut = Date.now()
    await new Promise((r) => setTimeout(r, 5))
    const late = await sendEvents(h, roomId, text(alice.user_id, 'a3'), text(alice.user_id, 'e3'))
    await fromElsewhere([early[1]!.event_id, early[3]!.event_id, late[1]!.event_id])

    // By default only the other server's users' messages before the point go.
    expect(await purged(roomId, { purge_up_to_ts: cut })).to.deep.equal({ status: 'complete', deleted: 2 })
    expect(bodies(await history(roomId))).to.deep.equal(['a1', 'a2', 'a3', 'e3'])
    expect(await purged(roomId, { purge_up_to_ts: cut, delete_local_events: true })).to.deep.equal({ status: 'complete', deleted: 2 })
    expect(bodies(await history(roomId))).to.deep.equal(['a3', 'e3'])
    // Up to a time after everything: the latest event stays.
    expect(await purged(roomId, { purge_up_to_ts: Date.now() + 60_000, delete_local_events: true })).to.deep.equal({ status: 'complete', deleted: 1 })
    expect(bodies(await history(roomId))).to.deep.equal(['e3'])
  })

  it('should refuse what it must with Matrix errors', async () => {
    const roomId = await createRoom(h, alice.user_id)
    const other = await createRoom(h, alice.user_id)
    const [event] = await sendEvents(h, other, text(alice.user_id, 'elsewhere'))
    const errcode = async (res: Promise<LightMyRequestResponse>, status: number) => (await ok<{ errcode: string }>(res, status)).errcode
    expect(await errcode(purge(roomId, { purge_up_to_ts: 0 }, undefined, alice), 403)).to.equal('M_FORBIDDEN')
    expect(await errcode(purge(roomId, {}), 400)).to.equal('M_MISSING_PARAM')
    expect(await errcode(purge(roomId, { purge_up_to_ts: 'soon' }), 400)).to.equal('M_BAD_JSON')
    expect(await errcode(purge(roomId, { purge_up_to_ts: -1 }), 400)).to.equal('M_BAD_JSON')
    expect(await errcode(purge('!nowhere:hs.test', { purge_up_to_ts: 0 }), 404)).to.equal('M_NOT_FOUND')
    expect(await errcode(purge('not a room', { purge_up_to_ts: 0 }), 400)).to.equal('M_INVALID_PARAM')
    expect(await errcode(purge(roomId, {}, event!.event_id), 404)).to.equal('M_NOT_FOUND')
    expect(await errcode(purge(roomId, { purge_up_to_event_id: event!.event_id }), 404)).to.equal('M_NOT_FOUND')
    expect(await errcode(h.call('GET', `${admin1}/purge_history_status/nope`, { token: root.access_token }), 404)).to.equal('M_NOT_FOUND')
    expect(await errcode(h.call('GET', `${admin1}/purge_history_status/nope`, { token: alice.access_token }), 403)).to.equal('M_FORBIDDEN')
  })

  it('should resume a purge its process left, and let one process at a time run it', async () => {
    const roomId = await createRoom(h, alice.user_id)
    const sent = await sendEvents(h, roomId, ...Array.from({ length: 5 }, (_, i) => text(alice.user_id, `r${i}`)))
    const db = h.t.db
    const [{ depth }] = (await db.selectFrom('events').select('depth').where('event_id', '=', sent[4]!.event_id).execute()) as [{ depth: bigint }]
    await startHistoryPurge(db, { purgeId: 'left-behind', roomId, upToDepth: BigInt(depth), deleteLocalEvents: true, now: Date.now() })
    // Another session holds the claim: this one runs nothing.
    const ran = await withClaim(db, 'myelin.history_purge.left-behind', async () => !(await runHistoryPurge(db, 'left-behind', { localServer: 'hs.test' })))
    expect(ran).to.equal(true)
    expect(bodies(await history(roomId))).to.have.length(5)
    // Asking its status resumes it.
    for (let status = 'active'; status === 'active'; await new Promise((r) => setTimeout(r, 20))) {
      status = (await ok<{ status: string }>(h.call('GET', `${admin1}/purge_history_status/left-behind`, { token: root.access_token }))).status
    }
    expect(bodies(await history(roomId))).to.deep.equal(['r4'])
  })

  it('should purge while the room goes on taking messages, losing none of them', async () => {
    const roomId = await createRoom(h, alice.user_id)
    const old = await sendEvents(h, roomId, ...Array.from({ length: 300 }, (_, i) => text(alice.user_id, `old${i}`)))
    const [point] = await sendEvents(h, roomId, text(alice.user_id, 'point'))
    const db = h.t.db
    const [{ depth }] = (await db.selectFrom('events').select('depth').where('event_id', '=', point!.event_id).execute()) as [{ depth: bigint }]
    await startHistoryPurge(db, { purgeId: 'busy', roomId, upToDepth: BigInt(depth), deleteLocalEvents: true, now: Date.now() })
    // Small chunks, so that the purge's transactions interleave with the sends.
    const purging = runHistoryPurge(db, 'busy', { localServer: 'hs.test', chunk: 7 })
    const sent: string[] = []
    for (let i = 0; i < 40; i++) sent.push(...(await sendEvents(h, roomId, text(alice.user_id, `new${i}`), text(alice.user_id, `new${i}b`))).map((e) => e.event_id))
    expect(await purging).to.equal(true)
    const left = await db.selectFrom('events').select('event_id').where('room_id', '=', roomId).where('type', '=', 'm.room.message').orderBy('depth').execute()
    expect(ids(left)).to.deep.equal([point!.event_id, ...sent])
    expect(await db.selectFrom('events').select('event_id').where('event_id', 'in', old.map((e) => e.event_id)).execute()).to.deep.equal([])
    expect(bodies(await history(roomId))).to.deep.equal(['point', ...Array.from({ length: 40 }, (_, i) => [`new${i}`, `new${i}b`]).flat()])
  })

  it("should not interleave with the room's deletion: a purge that waited for it fails, and leaves nothing of the room", async () => {
    const roomId = await createRoom(h, alice.user_id)
    const sent = await sendEvents(h, roomId, ...Array.from({ length: 30 }, (_, i) => text(alice.user_id, `d${i}`)))
    const db = h.t.db
    const [{ depth }] = (await db.selectFrom('events').select('depth').where('event_id', '=', sent[29]!.event_id).execute()) as [{ depth: bigint }]
    await startHistoryPurge(db, { purgeId: 'vs-deletion', roomId, upToDepth: BigInt(depth), deleteLocalEvents: true, now: Date.now() })
    const waiting = async (n: number) => {
      for (const deadline = Date.now() + 5_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 10))) {
        const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`.execute(db)
        if (rows[0]!.n >= n) return
      }
      expect.fail(`${n} sessions should be waiting for the room's history lock`)
    }
    // Hold the room's history lock; the deletion queues for it first, then the purge's chunk.
    const release = Promise.withResolvers<void>()
    const holder = db.transaction().execute(async (trx) => {
      await lockRoomHistory(trx, roomId)
      await release.promise
    })
    await new Promise((r) => setTimeout(r, 20))
    const deletion = purgeRoom(db, roomId)
    let purging: Promise<boolean> | undefined
    try {
      await waiting(1)
      purging = runHistoryPurge(db, 'vs-deletion', { localServer: 'hs.test', chunk: 5 })
      await waiting(2)
    } finally {
      release.resolve()
      await holder
    }
    expect(await deletion).to.be.greaterThan(30)
    expect(await purging).to.equal(true)
    const status = await ok<{ status: string; deleted: number; error?: string }>(h.call('GET', `${admin1}/purge_history_status/vs-deletion`, { token: root.access_token }))
    expect(status).to.deep.equal({ status: 'failed', deleted: 0, error: 'the room was deleted' })
    for (const table of ['events', 'event_edges', 'event_backward_extremities', 'event_forward_extremities'] as const) {
      expect(await db.selectFrom(table).select('room_id').where('room_id', '=', roomId).execute(), table).to.deep.equal([])
    }
  })

  it('should leave exactly the state, the events from the point on and the latest, whatever the chunk size (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.constantFrom('message', 'remote', 'topic'), { minLength: 1, maxLength: 25 }),
        fc.nat(),
        fc.integer({ min: 1, max: 6 }),
        fc.boolean(),
        async (kinds, pointAt, chunk, deleteLocal) => {
          const roomId = await createRoom(h, alice.user_id, { joinRule: 'public' })
          const remote: string[] = []
          for (const [i, kind] of kinds.entries()) {
            const event = kind === 'topic' ? { type: 'm.room.topic', state_key: '', sender: alice.user_id, content: { topic: `t${i}` } } : text(alice.user_id, `x${i}`)
            const [sent] = await sendEvents(h, roomId, event)
            if (kind === 'remote') remote.push(sent!.event_id)
          }
          if (remote.length > 0) await fromElsewhere(remote)
          const db = h.t.db
          const rows = await db.selectFrom('events').select(['event_id', 'depth', 'state_key', 'sender']).where('room_id', '=', roomId).orderBy('depth').execute()
          const upTo = BigInt(rows[pointAt % rows.length]!.depth)
          const latest = rows.at(-1)!.event_id
          const kept = rows
            .filter((r) => BigInt(r.depth) >= upTo || r.state_key !== null || r.event_id === latest || (!deleteLocal && r.sender.endsWith(':hs.test')))
            .map((r) => r.event_id)
          const purgeId = `p-${roomId}`
          await startHistoryPurge(db, { purgeId, roomId, upToDepth: upTo, deleteLocalEvents: deleteLocal, now: Date.now() })
          expect(await runHistoryPurge(db, purgeId, { localServer: 'hs.test', chunk })).to.equal(true)
          const left = await db.selectFrom('events').select('event_id').where('room_id', '=', roomId).orderBy('depth').execute()
          expect(ids(left)).to.deep.equal(kept)
          const status = await db.selectFrom('history_purges').select(['status', 'deleted']).where('purge_id', '=', purgeId).executeTakeFirstOrThrow()
          expect([status.status, Number(status.deleted)]).to.deep.equal(['complete', rows.length - kept.length])
          // Backward extremities: exactly the deleted events a kept event names.
          const named = await db.selectFrom('event_edges').select('prev_event_id').where('room_id', '=', roomId).execute()
          const dangling = new Set(named.map((e) => e.prev_event_id).filter((id) => !kept.includes(id)))
          const backward = await db.selectFrom('event_backward_extremities').select('event_id').where('room_id', '=', roomId).execute()
          expect(new Set(ids(backward))).to.deep.equal(dangling)
        },
      ),
      { numRuns: 15 },
    )
  })
})
