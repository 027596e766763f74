import { expect } from 'chai'
import type { LightMyRequestResponse } from 'fastify'
import { adminRoutes } from '../../../api/routes/admin.js'
import { roomWriteRoutes } from '../../../api/routes/rooms.js'
import { startApi, v3, type ApiHarness, type Session } from './api-harness.js'
import { createRoomAs, enc, joinAs } from './read-fixtures.js'

const override = (userId: string) => `/_synapse/admin/v1/users/${enc(userId)}/override_ratelimit`

describe('api message rate limit (rc_message) and its per-user overrides', function () {
  this.timeout(60_000)
  let h: ApiHarness
  let root: Session
  let alice: Session
  let bob: Session
  let room: string
  before(async () => {
    // 2 events a second in bursts of 3: a burst is used up at once, a token comes back in 500 ms.
    h = await startApi({ config: { rc_message: { per_second: 2, burst_count: 3 } }, roomRoutes: (services) => [roomWriteRoutes(services), adminRoutes(services)] })
    alice = await h.register('rl_alice')
    bob = await h.register('rl_bob')
    root = await h.registerAdmin('rl_root')
    room = await createRoomAs(h, alice, { preset: 'public_chat' })
    await joinAs(h, bob, room)
  })
  after(() => h.close())

  let txn = 0
  const send = (session: Session, body = 'hi') => h.call('PUT', `${v3}/rooms/${enc(room)}/send/m.room.message/rl${++txn}`, { token: session.access_token, body: { msgtype: 'm.text', body } })
  const eventsOf = async (session: Session) =>
    Number((await h.t.db.selectFrom('events').select((eb) => eb.fn.countAll<string>().as('n')).where('room_id', '=', room).where('sender', '=', session.user_id).executeTakeFirstOrThrow()).n)
  const refusedCount = async () => (await h.metrics.getSingleMetric('myelin_ratelimited_total')!.get()).values[0]?.value ?? 0
  const limited = (res: LightMyRequestResponse) => {
    expect(res.statusCode, res.body).to.equal(429)
    const body = res.json<{ errcode: string; retry_after_ms: number }>()
    expect(body.errcode).to.equal('M_LIMIT_EXCEEDED')
    return body.retry_after_ms
  }
  const statuses = async (n: number, session: Session) => {
    const answers: number[] = []
    for (let i = 0; i < n; i++) answers.push((await send(session)).statusCode)
    return answers
  }
  const admin = (method: 'GET' | 'POST' | 'DELETE', userId: string, body?: unknown, session = root) =>
    h.call(method, override(userId), { token: session.access_token, ...(body !== undefined && { body }) })
  const wait = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

  it('should let each user send a burst, then answer 429 with retry_after_ms and store nothing until a token is back', async () => {
    const before = await eventsOf(alice)
    const refusedBefore = await refusedCount()
    expect(await statuses(3, alice)).to.deep.equal([200, 200, 200])
    const retryAfter = limited(await send(alice, 'one too many'))
    expect(retryAfter).to.be.within(1, 500)
    // State events count as messages too; membership changes do not.
    limited(await h.call('PUT', `${v3}/rooms/${enc(room)}/state/m.room.topic`, { token: alice.access_token, body: { topic: 'limited' } }))
    expect((await h.call('POST', `${v3}/rooms/${enc(room)}/leave`, { token: alice.access_token, body: {} })).statusCode).to.equal(200)
    await joinAs(h, alice, room)
    expect(await eventsOf(alice), 'three messages, a leave and a join').to.equal(before + 5)
    expect((await refusedCount()) - refusedBefore).to.equal(2)
    // Another user's budget is their own.
    expect((await send(bob)).statusCode).to.equal(200)

    await wait(retryAfter + 20)
    expect((await send(alice, 'after the wait')).statusCode).to.equal(200)
    limited(await send(alice))
  })

  it('should apply an admin override at once: 0 and 0 lift the limit, others replace it, delete restores it', async () => {
    expect(await (await admin('GET', bob.user_id)).json()).to.deep.equal({})
    const lifted = await admin('POST', bob.user_id, { messages_per_second: 0, burst_count: 0 })
    expect([lifted.statusCode, lifted.json()]).to.deep.equal([200, { messages_per_second: 0, burst_count: 0 }])
    expect((await admin('GET', bob.user_id)).json()).to.deep.equal({ messages_per_second: 0, burst_count: 0 })
    expect(await statuses(12, bob)).to.deep.equal(Array(12).fill(200))

    // A stricter limit of its own: one event, then one a second.
    expect((await admin('POST', bob.user_id, { messages_per_second: 1, burst_count: 1 })).statusCode).to.equal(200)
    expect((await statuses(2, bob))[1]).to.equal(429)
    expect((await send(bob)).statusCode).to.equal(429)

    expect((await admin('DELETE', bob.user_id)).statusCode).to.equal(200)
    expect((await admin('GET', bob.user_id)).json()).to.deep.equal({})
    await wait(1600) // the configured bucket (3 at 2 a second) fills again
    expect(await statuses(4, bob)).to.deep.equal([200, 200, 200, 429])
  })

  it('should refuse bad overrides, unknown or remote users and non-admins with Matrix errors, changing nothing', async () => {
    for (const body of [{ messages_per_second: -1 }, { burst_count: 1.5 }, { messages_per_second: 'many' }]) {
      const res = await admin('POST', alice.user_id, body)
      expect([res.statusCode, res.json().errcode], JSON.stringify(body)).to.deep.equal([400, 'M_BAD_JSON'])
    }
    expect((await admin('GET', alice.user_id)).json()).to.deep.equal({})
    const unknown = await admin('POST', '@nobody:hs.test', {})
    expect([unknown.statusCode, unknown.json().errcode]).to.deep.equal([404, 'M_NOT_FOUND'])
    const remote = await admin('GET', '@someone:elsewhere.test')
    expect(remote.statusCode).to.equal(400)
    for (const method of ['GET', 'POST', 'DELETE'] as const) {
      const refused = await admin(method, alice.user_id, method === 'POST' ? {} : undefined, alice)
      expect([method, refused.statusCode, refused.json().errcode]).to.deep.equal([method, 403, 'M_FORBIDDEN'])
    }
    expect((await admin('GET', alice.user_id)).json()).to.deep.equal({})
  })
})
