import { expect } from 'chai'
import fc from 'fast-check'
import { roomReadRoutes } from '../../../api/routes/room-reads.js'
import { roomWriteRoutes } from '../../../api/routes/rooms.js'
import { timestampWindow } from '../../../storage/room-reads.js'
import { startApi, type ApiHarness, type Session } from './api-harness.js'
import { createRoomAs, enc, sendTextAs } from './read-fixtures.js'

const v1 = '/_matrix/client/v1'
const v3 = '/_matrix/client/v3'

describe('api timestamp_to_event (GET /v1/rooms/{roomId}/timestamp_to_event)', function () {
  this.timeout(120_000)
  let h: ApiHarness
  let alice: Session
  let carol: Session
  before(async () => {
    h = await startApi({ roomRoutes: (services) => [roomReadRoutes(services), roomWriteRoutes(services)] })
    alice = await h.register('alice')
    carol = await h.register('carol')
  })
  after(() => h.close())

  const createRoom = (session: Session, body: Record<string, unknown>) => createRoomAs(h, session, body)
  const send = (session: Session, roomId: string, body: string) => sendTextAs(h, session, roomId, body)
  const at = (session: Session, roomId: string, query: string) => h.call('GET', `${v1}/rooms/${enc(roomId)}/timestamp_to_event?${query}`, { token: session.access_token })
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
  /** The room's events as stored: ID, timestamp, stream order. */
  const stored = async (roomId: string) =>
    (await h.t.db.selectFrom('events').select(['event_id', 'origin_server_ts', 'stream_ordering']).where('room_id', '=', roomId).where('outlier', '=', false).orderBy('stream_ordering').execute()).map((e) => ({
      id: e.event_id,
      ts: Number(e.origin_server_ts),
      so: BigInt(e.stream_ordering),
    }))

  it('should find the closest event either way, as a scan of every event would', async () => {
    const roomId = await createRoom(alice, { preset: 'private_chat' })
    // Runs of sends within one millisecond (ties) and pauses between them; more events than the
    // window on either side of the bisection's landing (timestampWindow), so it is the
    // bisection that finds them.
    for (let i = 0; i < 70; i++) {
      await Promise.all([send(alice, roomId, `a${i}`), send(alice, roomId, `b${i}`)])
      await sleep(i % 3 === 0 ? 8 : 2)
    }
    const events = await stored(roomId)
    expect(events.length).to.be.above(2 * timestampWindow)
    const expected = (ts: number, dir: 'f' | 'b') => {
      const side = events.filter((e) => (dir === 'f' ? e.ts >= ts : e.ts <= ts))
      side.sort((a, b) => (dir === 'f' ? a.ts - b.ts || (a.so < b.so ? -1 : 1) : b.ts - a.ts || (a.so < b.so ? 1 : -1)))
      return side[0]
    }
    const first = events[0]!.ts
    const last = events.at(-1)!.ts
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: first - 20, max: last + 20 }), fc.constantFrom<'f' | 'b'>('f', 'b'), async (ts, dir) => {
        const res = await at(alice, roomId, `ts=${ts}&dir=${dir}`)
        const want = expected(ts, dir)
        if (want === undefined) {
          expect([res.statusCode, res.json().errcode]).to.deep.equal([404, 'M_NOT_FOUND'])
          return
        }
        expect(res.statusCode, res.body).to.equal(200)
        expect(res.json()).to.deep.equal({ event_id: want.id, origin_server_ts: want.ts })
      }),
      { numRuns: 120 },
    )
    // Each exact timestamp finds its own event (the first of a tie going forwards, the last backwards).
    for (const e of events.slice(0, 10)) {
      expect((await at(alice, roomId, `ts=${e.ts}&dir=f`)).json().event_id).to.equal(expected(e.ts, 'f')!.id)
      expect((await at(alice, roomId, `ts=${e.ts}&dir=b`)).json().event_id).to.equal(expected(e.ts, 'b')!.id)
    }
  })

  it('should only answer with events the user may see', async () => {
    const roomId = await createRoom(alice, { preset: 'public_chat', initial_state: [{ type: 'm.room.history_visibility', state_key: '', content: { history_visibility: 'joined' } }] })
    const hidden = await send(alice, roomId, 'before carol')
    await sleep(20)
    const joinedAt = Date.now()
    await sleep(5)
    expect((await h.call('POST', `${v3}/join/${enc(roomId)}`, { token: carol.access_token, body: {} })).statusCode).to.equal(200)
    const after = await send(alice, roomId, 'after carol')
    const events = await stored(roomId)
    const join = events.at(-2)!
    // Backwards from before her join: not the message she may not see (history_visibility
    // joined), but the latest event before it that she may read (from the room's creation,
    // under shared visibility), as GET /event decides.
    const seen = await at(alice, roomId, `ts=${joinedAt}&dir=b`)
    expect(seen.json().event_id).to.equal(hidden)
    const readAs = (eventId: string) => h.call('GET', `${v3}/rooms/${enc(roomId)}/event/${enc(eventId)}`, { token: carol.access_token })
    const hiddenAt = events.findIndex((e) => e.id === hidden)
    expect((await readAs(hidden)).statusCode).to.equal(404)
    let readable: string | undefined
    for (let i = hiddenAt - 1; i >= 0 && readable === undefined; i--) if ((await readAs(events[i]!.id)).statusCode === 200) readable = events[i]!.id
    expect(readable).to.be.a('string')
    const back = await at(carol, roomId, `ts=${joinedAt}&dir=b`)
    expect([back.statusCode, back.json().event_id]).to.deep.equal([200, readable])
    // Forwards from just after the room's creation: her own join, the next event she may see.
    expect((await at(carol, roomId, `ts=${events[hiddenAt]!.ts}&dir=f`)).json().event_id).to.equal(join.id)
    expect((await at(alice, roomId, `ts=0&dir=f`)).json().event_id).to.equal(events[0]!.id)
    expect((await at(carol, roomId, `ts=${Date.now() + 1000}&dir=b`)).json().event_id).to.equal(after)

    // Someone never in a private room: 403; an unknown room: 404; bad parameters: 400.
    const secret = await createRoom(alice, { preset: 'private_chat' })
    expect([(await at(carol, secret, 'ts=0&dir=f')).statusCode, (await at(carol, secret, 'ts=0&dir=f')).json().errcode]).to.deep.equal([403, 'M_FORBIDDEN'])
    expect((await at(alice, '!nope:hs.test', 'ts=0&dir=f')).statusCode).to.equal(404)
    for (const query of ['dir=f', 'ts=0', 'ts=-1&dir=f', 'ts=1&dir=x', 'ts=abc&dir=b', 'ts=1e5&dir=f']) {
      const res = await at(alice, roomId, query)
      expect(res.statusCode, query).to.equal(400)
      expect(res.json().errcode, query).to.be.a('string')
    }
    expect((await h.call('GET', `${v1}/rooms/${enc(roomId)}/timestamp_to_event?ts=0&dir=f`)).statusCode).to.equal(401)
  })
})
