import { expect } from 'chai'
import { reportRoutes } from '../../../api/routes/reports.js'
import { roomReadRoutes } from '../../../api/routes/room-reads.js'
import { roomWriteRoutes } from '../../../api/routes/rooms.js'
import { startApi, v3, type ApiHarness, type Session } from './api-harness.js'
import { createRoomAs, enc, sendTextAs } from './read-fixtures.js'

const reportsUrl = '/_synapse/admin/v1/event_reports'

describe('api content reports (report an event or a room; admins list them)', function () {
  this.timeout(60_000)
  let h: ApiHarness
  let alice: Session
  let bob: Session
  let carol: Session
  let admin: Session
  before(async () => {
    h = await startApi({ roomRoutes: (services) => [roomReadRoutes(services), roomWriteRoutes(services), reportRoutes(services)] })
    alice = await h.register('alice')
    bob = await h.register('bob')
    carol = await h.register('carol')
    admin = await h.registerAdmin('root')
  })
  after(() => h.close())

  const createRoom = (session: Session, body: Record<string, unknown>) => createRoomAs(h, session, body)
  const send = (session: Session, roomId: string, body: string) => sendTextAs(h, session, roomId, body)
  const report = (session: Session | undefined, roomId: string, eventId: string | undefined, body: unknown) =>
    h.call('POST', `${v3}/rooms/${enc(roomId)}${eventId === undefined ? '' : `/report/${enc(eventId)}`}${eventId === undefined ? '/report' : ''}`, { ...(session && { token: session.access_token }), body })
  const list = (session: Session, query = '') => h.call('GET', `${reportsUrl}${query}`, { token: session.access_token })
  const statusOf = (res: { statusCode: number; json: () => unknown }) => [res.statusCode, (res.json() as { errcode?: string }).errcode]

  it('should take reports of events the reporter may see and of known rooms, and reveal nothing of the others', async () => {
    const roomId = await createRoom(alice, { preset: 'public_chat', name: 'Lobby' })
    expect((await h.call('POST', `${v3}/join/${enc(roomId)}`, { token: bob.access_token, body: {} })).statusCode).to.equal(200)
    const abuse = await send(alice, roomId, 'abuse')
    const secret = await createRoom(alice, { preset: 'private_chat' })
    const hidden = await send(alice, secret, 'hidden')

    const ok = await report(bob, roomId, abuse, { reason: 'spam', score: -100 })
    expect([ok.statusCode, ok.json()]).to.deep.equal([200, {}])
    expect((await report(bob, roomId, undefined, { reason: 'whole room' })).statusCode).to.equal(200)
    // Carol may report the private room (known to the server) but not its event: 404 like an unknown event.
    expect((await report(carol, secret, undefined, {})).statusCode).to.equal(200)
    expect(statusOf(await report(carol, secret, hidden, { reason: 'x' }))).to.deep.equal([404, 'M_NOT_FOUND'])
    expect(statusOf(await report(bob, roomId, '$nope', { reason: 'x' }))).to.deep.equal([404, 'M_NOT_FOUND'])
    expect(statusOf(await report(bob, '!nope:hs.test', undefined, {}))).to.deep.equal([404, 'M_NOT_FOUND'])
    expect(statusOf(await report(bob, 'nope', abuse, {}))).to.deep.equal([400, 'M_INVALID_PARAM'])
    expect(statusOf(await report(bob, roomId, abuse, { score: 5 }))).to.deep.equal([400, 'M_BAD_JSON'])
    expect(statusOf(await report(bob, roomId, abuse, { reason: 7 }))).to.deep.equal([400, 'M_BAD_JSON'])
    expect(statusOf(await report(undefined, roomId, abuse, {}))).to.deep.equal([401, 'M_MISSING_TOKEN'])

    const stored = await h.t.db.selectFrom('event_reports').select(['room_id', 'event_id', 'user_id', 'reason', 'score']).orderBy('id').execute()
    expect(stored).to.deep.equal([
      { room_id: roomId, event_id: abuse, user_id: bob.user_id, reason: 'spam', score: -100 },
      { room_id: roomId, event_id: null, user_id: bob.user_id, reason: 'whole room', score: null },
      { room_id: secret, event_id: null, user_id: carol.user_id, reason: null, score: null },
    ])
  })

  it('should list reports to server admins only, newest first, with pages and filters', async () => {
    expect(statusOf(await list(bob))).to.deep.equal([403, 'M_FORBIDDEN'])
    const all = (await list(admin)).json<{ event_reports: Record<string, unknown>[]; total: number; next_token?: number }>()
    expect(all.total).to.equal(3)
    expect(all.event_reports.map((r) => r['reason'])).to.deep.equal([null, 'whole room', 'spam'])
    expect(all.event_reports[2]).to.include({ user_id: bob.user_id, sender: alice.user_id, name: 'Lobby', score: -100 })
    expect(all.event_reports[2]!['received_ts']).to.be.a('number')
    expect(all).not.to.have.property('next_token')

    const first = (await list(admin, '?limit=2&dir=f')).json<{ event_reports: { reason: string | null }[]; next_token?: number }>()
    expect(first.event_reports.map((r) => r.reason)).to.deep.equal(['spam', 'whole room'])
    expect(first.next_token).to.equal(2)
    const rest = (await list(admin, `?limit=2&dir=f&from=${first.next_token}`)).json<{ event_reports: { reason: string | null }[]; next_token?: number }>()
    expect(rest.event_reports.map((r) => r.reason)).to.deep.equal([null])
    expect(rest).not.to.have.property('next_token')

    expect((await list(admin, `?user_id=${enc(carol.user_id)}`)).json<{ total: number }>().total).to.equal(1)
    expect(statusOf(await list(admin, '?dir=sideways'))).to.deep.equal([400, 'M_INVALID_PARAM'])
  })

  it('should show one report with the reported event to admins, and let them delete it', async () => {
    const all = (await list(admin, '?dir=f')).json<{ event_reports: { id: number; reason: string | null; event_id: string | null }[] }>()
    const spam = all.event_reports.find((r) => r.reason === 'spam')!
    const one = (await h.call('GET', `${reportsUrl}/${spam.id}`, { token: admin.access_token })).json<{ id: number; reason: string; event_json: { event_id: string; type: string; sender: string } }>()
    expect(one).to.include({ id: spam.id, reason: 'spam' })
    expect(one.event_json).to.include({ type: 'm.room.message', sender: alice.user_id })
    expect(one.event_json).to.have.nested.property('content.body')
    const room = all.event_reports.find((r) => r.reason === 'whole room')!
    expect((await h.call('GET', `${reportsUrl}/${room.id}`, { token: admin.access_token })).json()).to.include({ event_id: null, event_json: null })

    expect(statusOf(await h.call('GET', `${reportsUrl}/${spam.id}`, { token: bob.access_token }))).to.deep.equal([403, 'M_FORBIDDEN'])
    expect(statusOf(await h.call('DELETE', `${reportsUrl}/${spam.id}`, { token: bob.access_token }))).to.deep.equal([403, 'M_FORBIDDEN'])
    expect((await h.call('DELETE', `${reportsUrl}/${spam.id}`, { token: admin.access_token })).statusCode).to.equal(200)
    expect(statusOf(await h.call('GET', `${reportsUrl}/${spam.id}`, { token: admin.access_token }))).to.deep.equal([404, 'M_NOT_FOUND'])
    expect(statusOf(await h.call('DELETE', `${reportsUrl}/${spam.id}`, { token: admin.access_token }))).to.deep.equal([404, 'M_NOT_FOUND'])
    expect(statusOf(await h.call('GET', `${reportsUrl}/not-a-number`, { token: admin.access_token }))).to.deep.equal([400, 'M_INVALID_PARAM'])
    expect((await list(admin)).json<{ total: number }>().total).to.equal(all.event_reports.length - 1)
  })
})
