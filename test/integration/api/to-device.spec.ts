import { expect } from 'chai'
import type { ApiHarness, Session } from './api-harness.js'
import { v3 } from './api-harness.js'
import { enc, startReadApi, syncAs } from './read-fixtures.js'

interface SyncBody {
  next_batch: string
  to_device: { events: { sender: string; type: string; content: Record<string, unknown> }[] }
}

describe('api to-device messages', function () {
  this.timeout(60_000)
  let h: ApiHarness
  let alice: Session
  let bob: Session
  let bobPhone: Session
  let carol: Session
  let txn = 0
  before(async () => {
    h = await startReadApi()
    alice = await h.register('alice')
    bob = await h.register('bob')
    carol = await h.register('carol')
    const login = await h.call('POST', `${v3}/login`, { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: 'bob' }, password: 'correct horse battery' } })
    bobPhone = login.json<Session>()
  })
  after(() => h.close())

  // No rooms: these syncs are about the device's messages.
  const sync = (session: Session, query: Record<string, string> = {}) => syncAs<SyncBody>(h, session, { filter: '{"room":{"rooms":[]}}', ...query })
  const send = (from: Session, messages: unknown, txnId = `t${++txn}`, type = 'm.test') =>
    h.call('PUT', `${v3}/sendToDevice/${enc(type)}/${enc(txnId)}`, { token: from.access_token, body: { messages } })
  const contents = (body: SyncBody) => body.to_device.events.map((e) => e.content)
  const inbox = async (session: Session) =>
    Number((await h.t.db.selectFrom('device_inbox').select((eb) => eb.fn.countAll<string>().as('n')).where('user_id', '=', session.user_id).where('device_id', '=', session.device_id).executeTakeFirstOrThrow()).n)

  it('should deliver a message to each device named, or every device for *, once it is acknowledged by the next sync', async () => {
    const starts = await Promise.all([bob, bobPhone, carol, alice].map((s) => sync(s)))
    const res = await send(alice, { [bob.user_id]: { '*': { n: 1 } }, [carol.user_id]: { [carol.device_id]: { n: 2 }, NOSUCHDEVICE: { n: 3 } }, '@nobody:hs.test': { '*': { n: 4 } } })
    expect([res.statusCode, res.json()]).to.deep.equal([200, {}])
    const [forBob, forPhone, forCarol, forAlice] = await Promise.all([bob, bobPhone, carol, alice].map((s, i) => sync(s, { since: starts[i]!.next_batch })))
    expect(forBob!.to_device.events).to.deep.equal([{ sender: alice.user_id, type: 'm.test', content: { n: 1 } }])
    expect(contents(forPhone!)).to.deep.equal([{ n: 1 }])
    expect(contents(forCarol!)).to.deep.equal([{ n: 2 }])
    expect(contents(forAlice!)).to.deep.equal([])

    // Not acknowledged yet: the same since delivers it again. Acknowledged: never again, and
    // deleted by the device's first sync after the stream moves on.
    expect(contents(await sync(bob, { since: starts[0]!.next_batch }))).to.deep.equal([{ n: 1 }])
    const acknowledged = await sync(bob, { since: forBob!.next_batch })
    expect(contents(acknowledged)).to.deep.equal([])
    expect(await inbox(bob)).to.equal(1)
    expect((await send(alice, { [carol.user_id]: { '*': { n: 5 } } })).statusCode).to.equal(200)
    expect(contents(await sync(bob, { since: acknowledged.next_batch }))).to.deep.equal([])
    expect(await inbox(bob)).to.equal(0)
    expect(await inbox(bobPhone), 'the phone has not acknowledged it').to.equal(1)
  })

  it('should send a repeated transaction ID of the same device once, of another device again', async () => {
    const start = await sync(carol)
    expect((await send(alice, { [carol.user_id]: { '*': { n: 'first' } } }, 'same')).statusCode).to.equal(200)
    expect((await send(alice, { [carol.user_id]: { '*': { n: 'retry' } } }, 'same')).statusCode).to.equal(200)
    expect((await send(bob, { [carol.user_id]: { '*': { n: 'other device' } } }, 'same')).statusCode).to.equal(200)
    expect(contents(await sync(carol, { since: start.next_batch }))).to.deep.equal([{ n: 'first' }, { n: 'other device' }])
  })

  it('should deliver a long queue in order, 100 messages per sync', async () => {
    let since = (await sync(carol)).next_batch
    since = (await sync(carol, { since })).next_batch
    for (let i = 0; i < 150; i++) expect((await send(alice, { [carol.user_id]: { '*': { i } } })).statusCode).to.equal(200)
    const received: unknown[] = []
    const sizes: number[] = []
    for (let round = 0; round < 4; round++) {
      const body = await sync(carol, { since })
      sizes.push(body.to_device.events.length)
      received.push(...contents(body).map((c) => c['i']))
      since = body.next_batch
    }
    expect(sizes).to.deep.equal([100, 50, 0, 0])
    expect(received).to.deep.equal(Array.from({ length: 150 }, (_, i) => i))
  })

  it('should wake a waiting sync of the device when a message arrives', async () => {
    const start = await sync(bob)
    const drained = await sync(bob, { since: start.next_batch })
    const waiting = sync(bob, { since: drained.next_batch, timeout: '20000' })
    await new Promise((resolve) => setTimeout(resolve, 300))
    const sent = Date.now()
    expect((await send(carol, { [bob.user_id]: { [bob.device_id]: { wake: true } } })).statusCode).to.equal(200)
    expect(contents(await waiting)).to.deep.equal([{ wake: true }])
    expect(Date.now() - sent).to.be.below(10_000)
  })

  it('should deliver waiting messages to a since token of an earlier version (no to-device part)', async () => {
    const login = await h.call('POST', `${v3}/login`, { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: 'carol' }, password: 'correct horse battery' } })
    const laptop = login.json<Session>()
    expect((await send(alice, { [carol.user_id]: { [laptop.device_id]: { old: 'token' } } })).statusCode).to.equal(200)
    // A client that last synced before to-device positions existed.
    const threeParts = (await sync(alice)).next_batch.split('_').slice(0, 3).join('_')
    expect(contents(await sync(laptop, { since: threeParts }))).to.deep.equal([{ old: 'token' }])
  })

  it('should refuse malformed requests with a Matrix error and send nothing', async () => {
    const start = await sync(bob)
    const drained = await sync(bob, { since: start.next_batch })
    const cases: [string, Promise<{ statusCode: number; json: () => { errcode?: string } }>, number, string][] = [
      ['no messages', h.call('PUT', `${v3}/sendToDevice/m.test/x1`, { token: alice.access_token, body: {} }), 400, 'M_BAD_JSON'],
      ['content not an object', send(alice, { [bob.user_id]: { '*': 'hi' } }), 400, 'M_BAD_JSON'],
      ['devices not an object', send(alice, { [bob.user_id]: ['*'] }), 400, 'M_BAD_JSON'],
      ['malformed user', send(alice, { [bob.user_id]: { '*': {} }, bob: { '*': {} } }), 400, 'M_INVALID_PARAM'],
      ['other server', send(alice, { [bob.user_id]: { '*': {} }, '@bob:elsewhere.example': { '*': {} } }), 403, 'M_FORBIDDEN'],
      ['no body', h.call('PUT', `${v3}/sendToDevice/m.test/x2`, { token: alice.access_token }), 400, 'M_NOT_JSON'],
      ['no token', h.call('PUT', `${v3}/sendToDevice/m.test/x3`, { body: { messages: {} } }), 401, 'M_MISSING_TOKEN'],
    ]
    for (const [name, call, status, errcode] of cases) {
      const res = await call
      expect([name, res.statusCode, res.json().errcode]).to.deep.equal([name, status, errcode])
    }
    expect(contents(await sync(bob, { since: drained.next_batch }))).to.deep.equal([])
  })
})
