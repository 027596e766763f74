import { expect } from 'chai'
import fc from 'fast-check'
import { sql } from 'kysely'
import { pino } from 'pino'
import { createPresenceService } from '../../../api/presence-service.js'
import { buildApp } from '../../../api/app.js'
import { roomReadRoutes } from '../../../api/routes/room-reads.js'
import { roomWriteRoutes } from '../../../api/routes/rooms.js'
import { syncRoutes } from '../../../api/routes/sync.js'
import { lockOrderedStream } from '../../../storage/ordered-streams.js'
import { expirePresence, idleAfterMs, idlePresence, updatePresence, type PresenceState, type PresenceUpdate } from '../../../storage/presence.js'
import { parseSyncToken } from '../../../storage/sync.js'
import { startApi, v3, type ApiHarness, type Session } from './api-harness.js'
import { createSharedRoom, enc, syncAs } from './read-fixtures.js'

interface PresenceEvent {
  type: string
  sender: string
  content: { presence: PresenceState; status_msg?: string; last_active_ago?: number; currently_active?: boolean }
}
interface SyncBody {
  next_batch: string
  presence: { events: PresenceEvent[] }
}

const routes = (services: Parameters<typeof syncRoutes>[0]) => [roomReadRoutes(services), roomWriteRoutes(services), syncRoutes(services)]
/** Far enough ahead that every connection has run out. */
const later = () => Date.now() + 60 * 60_000

describe('api presence (shared by every process, shown in /sync)', function () {
  this.timeout(60_000)
  let h: ApiHarness
  before(async () => {
    h = await startApi({ roomRoutes: routes })
  })
  after(() => h.close())

  const statusUrl = (user: Session) => `${v3}/presence/${enc(user.user_id)}/status`
  const status = (of: Session, as: Session) => h.call('GET', statusUrl(of), { token: as.access_token })
  const put = (user: Session, body: unknown) => h.call('PUT', statusUrl(user), { token: user.access_token, body })
  // Rooms-less syncs: these are about presence.
  const sync = (user: Session, query: Record<string, string> = {}) => syncAs<SyncBody>(h, user, { filter: '{"room":{"rooms":[]}}', ...query })
  const seen = (body: SyncBody, user: Session) => body.presence.events.filter((e) => e.sender === user.user_id).map((e) => e.content)

  it('should be shared by every process, readable by the user and those sharing a room with them', async () => {
    const [alice, bob] = [await h.register('p_alice'), await h.register('p_bob')]
    expect((await status(alice, alice)).json()).to.deep.equal({ presence: 'offline' })
    expect((await put(alice, { presence: 'online', status_msg: 'at lunch' })).statusCode).to.equal(200)

    // Another process of the deployment (no room routes of its own) reads the same.
    const other = await buildApp({ config: h.config, db: h.t.db, log: pino({ level: 'silent' }) })
    try {
      const res = await other.inject({ method: 'GET', url: statusUrl(alice), headers: { authorization: `Bearer ${alice.access_token}` } })
      expect(res.json()).to.include({ presence: 'online', status_msg: 'at lunch', currently_active: true })
    } finally {
      await other.close()
    }

    const hidden = await status(alice, bob)
    expect([hidden.statusCode, hidden.json().errcode]).to.deep.equal([403, 'M_FORBIDDEN'])
    await createSharedRoom(h, alice, bob)
    expect((await status(alice, bob)).json()).to.include({ presence: 'online', status_msg: 'at lunch' })

    const cases: [string, Promise<{ statusCode: number; json: () => { errcode?: string } }>, number, string][] = [
      ['set another user', h.call('PUT', statusUrl(alice), { token: bob.access_token, body: { presence: 'offline' } }), 403, 'M_FORBIDDEN'],
      ['unknown state', put(alice, { presence: 'asleep' }), 400, 'M_BAD_JSON'],
      ['status_msg not a string', put(alice, { presence: 'online', status_msg: 7 }), 400, 'M_BAD_JSON'],
      ['malformed user ID', h.call('GET', `${v3}/presence/nobody/status`, { token: bob.access_token }), 400, 'M_INVALID_PARAM'],
      ['no token', h.call('GET', statusUrl(alice)), 401, 'M_MISSING_TOKEN'],
    ]
    for (const [name, call, code, errcode] of cases) {
      const res = await call
      expect([name, res.statusCode, res.json().errcode]).to.deep.equal([name, code, errcode])
    }
    expect((await status(alice, alice)).json(), 'nothing refused was stored').to.include({ presence: 'online', status_msg: 'at lunch' })
  })

  it('should show room members in /sync, wake a long-poll when one comes online, and show them offline once their connection ran out', async () => {
    const [carol, dave, outsider] = [await h.register('p_carol'), await h.register('p_dave'), await h.register('p_outsider')]
    await createSharedRoom(h, carol, dave)
    await sync(outsider)
    const first = await sync(carol)
    expect(seen(first, carol)[0]).to.include({ presence: 'online', currently_active: true })
    expect(seen(first, dave), 'dave never synced: offline, left out').to.deep.equal([])
    expect(seen(first, outsider), 'shares no room').to.deep.equal([])

    const started = Date.now()
    const woken = sync(carol, { since: first.next_batch, timeout: '10000' })
    await new Promise((resolve) => setTimeout(resolve, 300))
    await sync(dave)
    const body = await woken
    expect(Date.now() - started).to.be.below(5_000)
    expect(seen(body, dave)).to.have.length(1)
    expect(seen(body, dave)[0]).to.include({ presence: 'online', currently_active: true })

    // Dave stops syncing: the sweep sets him offline once his connection ran out.
    expect(await expirePresence(h.t.db, later())).to.be.at.least(1)
    const gone = await sync(carol, { since: body.next_batch, set_presence: 'offline' })
    expect(seen(gone, dave).map((c) => c.presence)).to.deep.equal(['offline'])
    expect(parseSyncToken(gone.next_batch).presence! > parseSyncToken(body.next_batch).presence!).to.equal(true)
    expect(seen(await sync(carol, { since: gone.next_batch, set_presence: 'offline' }), dave), 'shown once').to.deep.equal([])
  })

  it("should follow set_presence: offline changes nothing, unavailable marks idle and stays so while syncing, a send brings the user back online", async () => {
    const erin = await h.register('p_erin')
    const roomId = await createSharedRoom(h, erin)
    const state = async () => (await status(erin, erin)).json<{ presence: string }>().presence
    await sync(erin, { set_presence: 'offline' })
    expect(await state()).to.equal('offline')
    await sync(erin, { set_presence: 'unavailable' })
    expect(await state()).to.equal('unavailable')
    await sync(erin)
    expect(await state(), 'chosen idle, still syncing').to.equal('unavailable')

    const sent = await h.call('PUT', `${v3}/rooms/${enc(roomId)}/send/m.room.message/t1`, { token: erin.access_token, body: { msgtype: 'm.text', body: 'back' } })
    expect(sent.statusCode).to.equal(200)
    const deadline = Date.now() + 5_000
    while ((await state()) !== 'online' && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50))
    expect(await state(), 'the send is activity').to.equal('online')

    expect((await put(erin, { presence: 'offline' })).statusCode).to.equal(200)
    expect(await state()).to.equal('offline')
    await sync(erin)
    expect(await state(), 'syncing again marks online at once').to.equal('online')
  })

  it('should mark a connected user idle after 5 minutes without activity, shown to others; a sync does not wake them, a send does', async () => {
    const frank = await h.register('p_idler')
    const watcher = await h.register('p_idle_watcher')
    const roomId = await createSharedRoom(h, frank, watcher)
    // Everyone earlier tests left online goes offline: frank is the only one who can go idle.
    await expirePresence(h.t.db, later())
    const t0 = Date.now()
    // Connected for an hour: only idleness can change their state.
    const syncAt = (at: number) => updatePresence(h.t.db, frank.user_id, { kind: 'sync', state: 'online', connectedUntil: t0 + 60 * 60_000 }, at)
    await syncAt(t0)
    const stored = async () => (await h.t.db.selectFrom('presence').select(['state', 'last_active_ts']).where('user_id', '=', frank.user_id).executeTakeFirstOrThrow())
    expect(await stored()).to.deep.equal({ state: 'online', last_active_ts: BigInt(t0) })
    // Syncing is not activity: four minutes of it leave the last activity at the start.
    await syncAt(t0 + 4 * 60_000)
    expect((await stored()).last_active_ts).to.equal(BigInt(t0))
    let body = await sync(watcher, { set_presence: 'offline' })
    expect(await idlePresence(h.t.db, t0 + idleAfterMs)).to.equal(0)
    expect(await idlePresence(h.t.db, t0 + idleAfterMs + 1)).to.equal(1)
    expect((await stored()).state).to.equal('unavailable')
    body = await sync(watcher, { since: body.next_batch, set_presence: 'offline' })
    expect(seen(body, frank).map((c) => c.presence)).to.deep.equal(['unavailable'])
    // Still syncing as online: still idle. Sending: online again.
    await syncAt(t0 + idleAfterMs + 2)
    expect((await stored()).state).to.equal('unavailable')
    const sent = await h.call('PUT', `${v3}/rooms/${enc(roomId)}/send/m.room.message/idle1`, { token: frank.access_token, body: { msgtype: 'm.text', body: 'back' } })
    expect(sent.statusCode).to.equal(200)
    const deadline = Date.now() + 5_000
    while ((await stored()).state !== 'online' && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50))
    expect((await stored()).state).to.equal('online')
    // A user whose connection ran out goes offline, not idle.
    await syncAt(Date.now())
    await expirePresence(h.t.db, later() + 60 * 60_000)
    expect(await idlePresence(h.t.db, later() + 60 * 60_000)).to.equal(0)
    expect((await stored()).state).to.equal('offline')
  })

  it("should write a user's activity once however many sends ask at once, and take no lock for a sender who never connected", async () => {
    const [idle, stranger] = [await h.register('p_busy_sender'), await h.register('p_never_syncs')]
    await updatePresence(h.t.db, idle.user_id, { kind: 'set', state: 'unavailable' }, Date.now())
    const service = createPresenceService({ db: h.t.db, log: pino({ level: 'silent' }), clock: Date.now, enabled: true })
    const waitingOnStreamLock = async () =>
      Number((await sql<{ n: string }>`SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND wait_event = 'advisory'`.execute(h.t.db)).rows[0]?.n)
    let release = () => {}
    let locked = () => {}
    const isLocked = new Promise<void>((resolve) => (locked = resolve))
    // Another process holds the presence stream's lock (as a state change being written does).
    const holder = h.t.db.transaction().execute(async (trx) => {
      await lockOrderedStream(trx, 'presence')
      locked()
      await new Promise<void>((resolve) => (release = resolve))
    })
    await isLocked
    try {
      // A sender with no presence row: nothing to change, so nothing waits for the lock.
      const stranger_ = await Promise.race([
        updatePresence(h.t.db, stranger.user_id, { kind: 'active' }, Date.now()).then((moved) => ({ moved })),
        new Promise((resolve) => setTimeout(() => resolve('blocked on the stream lock'), 5_000)),
      ])
      expect(stranger_).to.deep.equal({ moved: false })
      // An idle user's twenty concurrent sends: one update comes online, the rest join it.
      for (let i = 0; i < 20; i++) service.active(idle.user_id)
      const deadline = Date.now() + 5_000
      while ((await waitingOnStreamLock()) === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20))
      await new Promise((resolve) => setTimeout(resolve, 200))
      expect(await waitingOnStreamLock(), 'transactions waiting for the presence lock').to.equal(1)
    } finally {
      release()
      await holder
    }
    const deadline = Date.now() + 5_000
    while ((await status(idle, idle)).json<{ presence: string }>().presence !== 'online' && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20))
    expect((await status(idle, idle)).json()).to.include({ presence: 'online', currently_active: true })
    expect(await h.t.db.selectFrom('presence').select('user_id').where('user_id', '=', stranger.user_id).execute()).to.deep.equal([])
  })

  it("should apply the filter's presence section", async () => {
    const [frank, gina] = [await h.register('p_frank'), await h.register('p_gina')]
    await createSharedRoom(h, frank, gina)
    await sync(gina)
    const all = await sync(frank)
    expect(all.presence.events.map((e) => e.sender).sort()).to.deep.equal([frank.user_id, gina.user_id].sort())
    const none = await sync(frank, { filter: JSON.stringify({ room: { rooms: [] }, presence: { not_types: ['*'] } }) })
    expect(none.presence.events).to.deep.equal([])
    const onlyGina = await sync(frank, { filter: JSON.stringify({ room: { rooms: [] }, presence: { senders: [gina.user_id] } }) })
    expect(onlyGina.presence.events.map((e) => e.sender)).to.deep.equal([gina.user_id])
  })

  it('property: incremental syncs show every change of the users one shares a room with, ending at their presence (a model of the rules)', async () => {
    const observer = await h.register('p_observer')
    const users = [await h.register('p_u0'), await h.register('p_u1'), await h.register('p_u2')]
    await createSharedRoom(h, observer, ...users)
    const outsider = await h.register('p_u_out')
    type Op = { kind: 'update'; user: number; update: PresenceUpdate } | { kind: 'expire' } | { kind: 'sync' }
    const state = fc.constantFrom<PresenceState>('online', 'unavailable', 'offline')
    const update: fc.Arbitrary<PresenceUpdate> = fc.oneof(
      fc.record({ kind: fc.constant('set' as const), state, statusMsg: fc.option(fc.constantFrom('busy', 'away'), { nil: undefined }) }).map((u) =>
        u.statusMsg === undefined ? { kind: 'set' as const, state: u.state } : u,
      ),
      fc.record({ kind: fc.constant('sync' as const), state: fc.constantFrom('online' as const, 'unavailable' as const), connectedUntil: fc.constant(0) }),
      fc.constant({ kind: 'active' as const }),
    )
    const op: fc.Arbitrary<Op> = fc.oneof(
      { arbitrary: fc.record({ kind: fc.constant('update' as const), user: fc.integer({ min: 0, max: users.length - 1 }), update }), weight: 6 },
      { arbitrary: fc.constant({ kind: 'expire' as const }), weight: 1 },
      { arbitrary: fc.constant({ kind: 'sync' as const }), weight: 2 },
    )
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 12 }), async (ops) => {
        // The model starts from what is stored (earlier runs left the users somewhere).
        const rows = await h.t.db.selectFrom('presence').select(['user_id', 'state', 'status_msg']).where('user_id', 'in', users.map((u) => u.user_id)).execute()
        const model = new Map<string, { state: PresenceState; msg: string | null } | undefined>(users.map((u) => [u.user_id, undefined]))
        for (const row of rows) model.set(row.user_id, { state: row.state, msg: row.status_msg })
        let body = await sync(observer, { set_presence: 'offline' })
        const shown = new Map<string, PresenceEvent['content']>()
        const take = (next: SyncBody) => {
          const [a, b] = [parseSyncToken(body.next_batch), parseSyncToken(next.next_batch)]
          expect(b.presence! >= a.presence!, 'the presence position never goes back').to.equal(true)
          for (const e of next.presence.events) {
            expect(e.sender, 'only users sharing a room').to.not.equal(outsider.user_id)
            shown.set(e.sender, e.content)
          }
          body = next
        }
        for (const o of ops) {
          if (o.kind === 'sync') take(await sync(observer, { since: body.next_batch, set_presence: 'offline' }))
          else if (o.kind === 'expire') {
            await expirePresence(h.t.db, later())
            for (const [user, m] of model) if (m !== undefined) model.set(user, { ...m, state: 'offline' })
          } else {
            const user = users[o.user]!.user_id
            await updatePresence(h.t.db, user, o.update.kind === 'sync' ? { ...o.update, connectedUntil: Date.now() } : o.update, Date.now())
            model.set(user, applyRules(model.get(user), o.update))
          }
          await updatePresence(h.t.db, outsider.user_id, { kind: 'set', state: 'online', statusMsg: `op ${ops.indexOf(o)}` }, Date.now())
        }
        take(await sync(observer, { since: body.next_batch, set_presence: 'offline' }))
        // What the observer saw last of each user (nothing: as before the run) is where the model ends.
        for (const [user, m] of model) {
          const before = rows.find((r) => r.user_id === user)
          const last = shown.get(user)
          const seenState = last ? { state: last.presence, msg: last.status_msg ?? null } : { state: before?.state ?? 'offline', msg: before?.status_msg ?? null }
          expect(seenState, user).to.deep.equal({ state: m?.state ?? 'offline', msg: m?.msg ?? null })
        }
      }),
      { numRuns: 25 },
    )
  })
})

describe('api presence turned off (presence.enabled: false)', function () {
  this.timeout(60_000)
  let h: ApiHarness
  before(async () => {
    h = await startApi({ roomRoutes: routes, config: { presence: { enabled: false } } })
  })
  after(() => h.close())

  it('should accept updates and drop them: everyone reads offline, /sync shows none and writes none', async () => {
    const [alice, bob] = [await h.register('alice'), await h.register('bob')]
    await createSharedRoom(h, alice, bob)
    const url = `${v3}/presence/${enc(alice.user_id)}/status`
    expect((await h.call('PUT', url, { token: alice.access_token, body: { presence: 'online', status_msg: 'hi' } })).statusCode).to.equal(200)
    expect((await h.call('GET', url, { token: bob.access_token })).json()).to.deep.equal({ presence: 'offline' })
    await syncAs<SyncBody>(h, bob)
    expect((await syncAs<SyncBody>(h, alice)).presence.events).to.deep.equal([])
    expect(await h.t.db.selectFrom('presence').selectAll().execute()).to.deep.equal([])
  })
})


/** The rules of storage/presence.ts, as a client would state them. */
function applyRules(before: { state: PresenceState; msg: string | null } | undefined, update: PresenceUpdate): { state: PresenceState; msg: string | null } | undefined {
  switch (update.kind) {
    case 'set':
      return { state: update.state, msg: update.statusMsg ?? null }
    case 'sync':
      if (update.state === 'unavailable') return { state: 'unavailable', msg: before?.msg ?? null }
      return { state: before?.state === 'unavailable' ? 'unavailable' : 'online', msg: before?.msg ?? null }
    case 'active':
      if (before === undefined) return undefined
      return { ...before, state: before.state === 'unavailable' ? 'online' : before.state }
  }
}
