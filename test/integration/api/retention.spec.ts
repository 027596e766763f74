import { expect } from 'chai'
import pino from 'pino'
import { Registry } from 'prom-client'
import { startRetention } from '../../../api/retention.js'
import { parseConfig } from '../../../storage/config.js'
import type { NewEvent } from '../../../persisters/new-event.js'
import { sql } from 'kysely'
import { roomPlugins } from '../../../api/room-plugins.js'
import { startReadApi, createRoom, createRoomAs, enc, sendEvents, sendTextAs, syncAs, text, type ClientEvent } from './read-fixtures.js'
import { startApi, v3, type ApiHarness, type Session } from './api-harness.js'

describe('api message retention (m.room.retention purges)', function () {
  this.timeout(60_000)
  let h: ApiHarness
  before(async () => {
    h = await startReadApi()
  })
  after(() => h.close())

  const alice = '@ret_alice:hs.test'
  const policy = (maxLifetime: number): NewEvent => ({ type: 'm.room.retention', state_key: '', sender: alice, content: { max_lifetime: maxLifetime } })
  const left = async (roomId: string) => {
    const rows = await h.t.db.selectFrom('events').select(['event_id', 'type', 'state_key']).where('room_id', '=', roomId).orderBy('depth').execute()
    return { messages: rows.filter((r) => r.type === 'm.room.message').map((r) => r.event_id), state: rows.filter((r) => r.state_key !== null).map((r) => r.event_id) }
  }
  /** A room with `policy`, three messages sent now and one sent `later` ms from now (its origin_server_ts moved on). */
  const roomWith = async (events: NewEvent[], later: number) => {
    const roomId = await createRoom(h, alice)
    if (events.length > 0) await sendEvents(h, roomId, ...events)
    const old = await sendEvents(h, roomId, text(alice, 'old1'), text(alice, 'old2'), text(alice, 'old3'))
    const [recent] = await sendEvents(h, roomId, text(alice, 'recent'))
    await h.t.db.updateTable('events').set((eb) => ({ origin_server_ts: eb('origin_server_ts', '+', BigInt(later)) })).where('event_id', '=', recent!.event_id).execute()
    return { roomId, old: old.map((e) => e.event_id), recent: recent!.event_id }
  }
  const retention = (config: Partial<ApiHarness['config']['retention']>, clock: () => number, registry?: Registry) =>
    startRetention({ db: h.t.db, log: pino({ level: 'silent' }), config: { ...h.config.retention, ...config }, serverName: 'hs.test', clock, registry })

  it("should purge what a room's policy has expired, this server's messages included, and keep its state and newer events", async () => {
    const hour = 3_600_000
    const kept = await roomWith([policy(hour)], 2 * hour)
    const noPolicy = await roomWith([], 2 * hour)
    const stateBefore = (await left(kept.roomId)).state
    const registry = new Registry()
    // An hour and a half on: the three old messages are past the room's hour, the recent one is not.
    const r = retention({ enabled: false }, () => Date.now() + 1.5 * hour, registry)
    expect(await r.runOnce()).to.deep.equal({ rooms: 1, deleted: 3 })
    await r.close()
    expect(await left(kept.roomId)).to.deep.equal({ messages: [kept.recent], state: stateBefore })
    // No policy and no default: nothing goes.
    expect((await left(noPolicy.roomId)).messages).to.deep.equal([...noPolicy.old, noPolicy.recent])
    expect(await registry.getSingleMetricAsString('myelin_history_purged_events_total')).to.match(/ 3$/m)
    // Its purges are not kept once done.
    expect(await h.t.db.selectFrom('history_purges').select('purge_id').where('room_id', '=', kept.roomId).execute()).to.deep.equal([])
    // Nothing more to do the next time.
    const again = retention({ enabled: false }, () => Date.now() + 1.5 * hour)
    expect((await again.runOnce()).rooms).to.equal(0)
    await again.close()
  })

  it('should apply the default lifetime to rooms without a policy, clamp policies to the allowed bounds, and keep the latest event', async () => {
    const day = 86_400_000
    const short = await roomWith([policy(1000)], 0)
    const plain = await roomWith([], 0)
    // Ten minutes on. The default (5 minutes) expires every message of `plain` but the latest; the
    // policy's second is clamped up to an hour, so `short` keeps everything.
    const r = retention({ enabled: false, default_max_lifetime_ms: 300_000, allowed_lifetime_min_ms: 3_600_000, allowed_lifetime_max_ms: day }, () => Date.now() + 600_000)
    await r.runOnce()
    await r.close()
    expect((await left(plain.roomId)).messages).to.deep.equal([plain.recent])
    expect((await left(short.roomId)).messages).to.deep.equal([...short.old, short.recent])
  })

  it('should run a pass at start and at every interval when enabled', async () => {
    const room = await roomWith([policy(60_000)], 600_000)
    let now = Date.now()
    const r = retention({ enabled: true, purge_interval_ms: 1000 }, () => now)
    try {
      // At start nothing has expired; two minutes on (the next pass), the old messages have.
      await new Promise((resolve) => setTimeout(resolve, 200))
      expect((await left(room.roomId)).messages).to.have.length(4)
      now += 120_000
      for (let waited = 0; (await left(room.roomId)).messages.length > 1 && waited < 5000; waited += 100) await new Promise((resolve) => setTimeout(resolve, 100))
      expect((await left(room.roomId)).messages).to.deep.equal([room.recent])
    } finally {
      await r.close()
    }
  })

  it('should list every problem of its configuration at once', () => {
    const base = { server_name: 'hs.test', database: { url: 'postgres://x/y' }, replication_secret: 'replication-secret-0123456789', signing_key: 'ed25519 a1 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=' }
    expect(parseConfig({ ...base }).retention).to.deep.equal({ enabled: false, purge_interval_ms: 86_400_000 })
    expect(() => parseConfig({ ...base, retention: { enabled: 'yes', allowed_lifetime_min_ms: 10, allowed_lifetime_max_ms: 5, purge_interval_ms: 10 } }))
      .to.throw()
      .with.property('message')
      .that.matches(/retention\.enabled/)
      .and.matches(/retention\.purge_interval_ms/)
    expect(() => parseConfig({ ...base, retention: { allowed_lifetime_min_ms: 10, allowed_lifetime_max_ms: 5 } }))
      .to.throw()
      .with.property('message')
      .that.matches(/allowed_lifetime_min_ms must not be above allowed_lifetime_max_ms/)
  })
})

describe('api message retention: reads hide what a lifetime expired before the purge', function () {
  this.timeout(60_000)
  const hour = 3_600_000
  /** Moves events `ms` into the past, in their row and in their JSON (what reads and purges look at). */
  const age = async (h: ApiHarness, eventIds: readonly string[], ms: number) => {
    await h.t.db.updateTable('events').set((eb) => ({ origin_server_ts: eb('origin_server_ts', '-', BigInt(ms)) })).where('event_id', 'in', eventIds).execute()
    await sql`UPDATE event_json SET json = jsonb_set(json::jsonb, '{origin_server_ts}', to_jsonb((json::jsonb ->> 'origin_server_ts')::int8 - ${ms}))::text WHERE event_id = ANY(${eventIds}::text[])`.execute(h.t.db)
  }
  const sendStateAs = async (h: ApiHarness, session: Session, roomId: string, type: string, content: Record<string, unknown>) => {
    const res = await h.call('PUT', `${v3}/rooms/${enc(roomId)}/state/${type}/`, { token: session.access_token, body: content })
    expect(res.statusCode, res.body).to.equal(200)
    return res.json<{ event_id: string }>().event_id
  }
  /** A room with a one-hour policy, an old topic, two messages two hours old and a recent one. */
  const scene = async (h: ApiHarness, session: Session) => {
    const roomId = await createRoomAs(h, session, { name: 'kept' })
    await sendStateAs(h, session, roomId, 'm.room.retention', { max_lifetime: hour })
    const topic = await sendStateAs(h, session, roomId, 'm.room.topic', { topic: 'old topic' })
    const old = [await sendTextAs(h, session, roomId, 'old1'), await sendTextAs(h, session, roomId, 'old2')]
    await age(h, [topic, ...old], 2 * hour)
    const recent = await sendTextAs(h, session, roomId, 'recent')
    return { roomId, topic, old, recent }
  }
  const read = async (h: ApiHarness, session: Session, roomId: string) => {
    const messages = await h.call('GET', `${v3}/rooms/${enc(roomId)}/messages?dir=b&limit=50`, { token: session.access_token })
    const sync = await syncAs<{ rooms: { join: Record<string, { timeline: { events: ClientEvent[] } }> } }>(h, session)
    const bodies = (events: ClientEvent[]) => events.filter((e) => e.type === 'm.room.message').map((e) => e.content['body'])
    return {
      messages: bodies([...messages.json<{ chunk: ClientEvent[] }>().chunk].reverse()),
      sync: bodies(sync.rooms.join[roomId]!.timeline.events),
      stateTypes: messages.json<{ chunk: ClientEvent[] }>().chunk.filter((e) => e.state_key !== undefined).map((e) => e.type),
    }
  }

  it('should hide expired messages from /messages, /sync and /event when retention is on, and keep state visible', async () => {
    const h = await startApi({ roomRoutes: (services) => roomPlugins(services), config: { retention: { enabled: true, purge_interval_ms: 86_400_000 } } })
    try {
      const bob = await h.register('ret_bob')
      const { roomId, old, recent } = await scene(h, bob)
      const seen = await read(h, bob, roomId)
      expect(seen.messages).to.deep.equal(['recent'])
      expect(seen.sync).to.deep.equal(['recent'])
      // The old topic is state: it stays, expired or not.
      expect(seen.stateTypes).to.include.members(['m.room.topic', 'm.room.retention', 'm.room.create'])
      expect((await h.call('GET', `${v3}/rooms/${enc(roomId)}/event/${enc(old[0]!)}`, { token: bob.access_token })).statusCode).to.equal(404)
      expect((await h.call('GET', `${v3}/rooms/${enc(roomId)}/event/${enc(recent)}`, { token: bob.access_token })).statusCode).to.equal(200)
      // They are still stored until the purge.
      expect(await h.t.db.selectFrom('events').select('event_id').where('event_id', 'in', old).execute()).to.have.length(2)
    } finally {
      await h.close()
    }
  })

  it('should show everything when retention is off, whatever the room says', async () => {
    const h = await startApi({ roomRoutes: (services) => roomPlugins(services) })
    try {
      const bob = await h.register('ret_bob2')
      const { roomId } = await scene(h, bob)
      expect((await read(h, bob, roomId)).messages).to.deep.equal(['old1', 'old2', 'recent'])
      expect(await h.t.db.selectFrom('retention_settings').selectAll().execute()).to.deep.equal([])
    } finally {
      await h.close()
    }
  })
})
