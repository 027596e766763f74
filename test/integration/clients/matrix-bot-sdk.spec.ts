import { randomUUID } from 'node:crypto'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { inspect } from 'node:util'
import { expect } from 'chai'
import { AutojoinRoomsMixin, LogService, MatrixClient, MemoryStorageProvider, SynapseAdminApis, type ILogger } from 'matrix-bot-sdk'
import { parse as parseYaml } from 'yaml'
import { registrationMac } from '../../../api/routes/admin-register.js'
import { createTestDatabase, redisUrl, type TestDatabase } from '../../support/db.js'
import { eventually } from '../reliability/load.js'
import { register, startTestCluster, type TestCluster } from '../reliability/test-cluster.js'
import { unexpectedErrors } from './server-answers.js'

const v3 = '/_matrix/client/v3'

interface SyncEvent {
  readonly event_id: string
  readonly type: string
  readonly sender: string
  readonly content: Record<string, unknown>
}

/**
 * matrix-bot-sdk 0.8 (without end-to-end encryption: its native crypto module is replaced by a
 * stub, see package.json `overrides`) against a real `myelin cluster`: the bot autojoins an
 * invite and answers a command, as bots do.
 */
describe('matrix-bot-sdk against a myelin cluster (smoke test)', function () {
  this.timeout(90_000)
  let t: TestDatabase
  let dir: string
  let cluster: TestCluster
  let bot: MatrixClient | undefined

  // The SDK logs at error level every failed request, even those it expects (a missing
  // `m.direct`) and its /sync cut off by the cluster stopping: kept, and shown if the test fails.
  const botErrors: string[] = []
  const quiet = () => {}
  const logger: ILogger = { info: quiet, warn: quiet, debug: quiet, trace: quiet, error: (module: string, ...data: unknown[]) => botErrors.push(`${module} ${inspect(data)}`) }

  before(async () => {
    LogService.setLogger(logger)
    t = await createTestDatabase()
    dir = await mkdtemp(join(tmpdir(), 'myelin-bot-'))
    cluster = await startTestCluster({ databaseUrl: t.url, redisUrl: redisUrl(), dataDir: dir })
  })

  afterEach(function () {
    if (this.currentTest?.state === 'failed') console.error(`matrix-bot-sdk errors:\n${botErrors.join('\n')}`)
  })

  after(async () => {
    bot?.stop()
    await cluster?.stop()
    await t?.drop()
    if (dir) await rm(dir, { recursive: true, force: true })
  })

  it('autojoins an invite and replies to !ping with a pong the user receives through /sync', async () => {
    const base = cluster.run.ready.client_url
    const [user, botSession] = [await register(base, 'user'), await register(base, 'pingbot')]
    const call = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
      const res = await fetch(`${base}${v3}${path}`, {
        method,
        headers: { authorization: `Bearer ${user.access_token}`, 'content-type': 'application/json' },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      })
      expect(res.status, `${method} ${path}`).to.equal(200)
      return (await res.json()) as T
    }

    bot = new MatrixClient(base, botSession.access_token, new MemoryStorageProvider())
    AutojoinRoomsMixin.setupOnClient(bot)
    const replies: string[] = []
    bot.on('room.message', (roomId: string, event: SyncEvent) => {
      if (event.sender === botSession.user_id || event.content['body'] !== '!ping') return
      void bot!.replyNotice(roomId, event, 'pong').then((id) => replies.push(id))
    })
    await bot.start()
    expect(await bot.getUserId()).to.equal(botSession.user_id)

    const { room_id: roomId } = await call<{ room_id: string }>('POST', '/createRoom', { invite: [botSession.user_id] })
    await eventually('the bot joins the room it was invited to', async () => {
      const { joined } = await call<{ joined: Record<string, unknown> }>('GET', `/rooms/${encodeURIComponent(roomId)}/joined_members`)
      return botSession.user_id in joined
    })

    let since = (await call<{ next_batch: string }>('GET', '/sync?timeout=0')).next_batch
    const { event_id: pingId } = await call<{ event_id: string }>('PUT', `/rooms/${encodeURIComponent(roomId)}/send/m.room.message/${randomUUID()}`, { msgtype: 'm.text', body: '!ping' })

    let pong: SyncEvent | undefined
    for (let i = 0; i < 30 && pong === undefined; i++) {
      const sync = await call<{ next_batch: string; rooms?: { join?: Record<string, { timeline: { events: SyncEvent[] } }> } }>('GET', `/sync?timeout=2000&since=${encodeURIComponent(since)}`)
      since = sync.next_batch
      pong = sync.rooms?.join?.[roomId]?.timeline.events.find((e) => e.sender === botSession.user_id && e.type === 'm.room.message')
    }
    expect(pong, 'the bot answered').to.not.equal(undefined)
    expect(pong!.content).to.include({ msgtype: 'm.notice' })
    expect(pong!.content['body']).to.match(/pong$/)
    expect(pong!.content['m.relates_to']).to.deep.equal({ 'm.in_reply_to': { event_id: pingId } })
    await eventually('the bot got its reply acknowledged', () => replies.length > 0)
    expect(replies, 'the bot sent exactly one reply').to.deep.equal([pong!.event_id])
    // Nothing the bot or the user asked for failed, but the bot's look-up of its unset `m.direct`
    // (404 M_NOT_FOUND, as the spec says).
    expect(unexpectedErrors(cluster, [`404 GET ${v3}/user/${encodeURIComponent(botSession.user_id)}/account_data/m.direct`]), 'error answers').to.deep.equal([])
  })

  it("drives the admin API with the SDK's SynapseAdminApis: users, admin flags, registration tokens, rooms and their asynchronous deletion", async () => {
    const base = cluster.run.ready.client_url
    const shared = parseYaml(await readFile(join(dir, 'config', 'shared.yaml'), 'utf8')) as { registration: { shared_secret: string } }
    const { nonce } = (await (await fetch(`${base}/_synapse/admin/v1/register`)).json()) as { nonce: string }
    const request = { nonce, username: 'sdk_admin', password: 'pw-sdk-admin', admin: true }
    const registered = await fetch(`${base}/_synapse/admin/v1/register`, { method: 'POST', body: JSON.stringify({ ...request, mac: registrationMac(shared.registration.shared_secret, request) }) })
    expect(registered.status).to.equal(200)
    const adminSession = (await registered.json()) as { access_token: string; user_id: string }
    const admin = new SynapseAdminApis(new MatrixClient(base, adminSession.access_token, new MemoryStorageProvider()))
    const member = await register(base, 'sdk_member')

    expect(await admin.isSelfAdmin()).to.equal(true)
    expect(await admin.isAdmin(member.user_id)).to.equal(false)
    const listed: string[] = []
    for await (const user of admin.listAllUsers({ limit: 1 })) listed.push(user.name)
    expect(listed).to.include.members([adminSession.user_id, member.user_id])
    expect((await admin.getUser(member.user_id)).admin).to.equal(false)
    await admin.upsertUser('@sdk_created:localhost', { password: 'pw-created', displayname: 'Made by the SDK' })
    expect((await admin.getUser('@sdk_created:localhost')).displayname).to.equal('Made by the SDK')

    const token = await admin.createRegistrationToken({ uses_allowed: 1 })
    expect(await admin.getRegistrationToken(token.token)).to.include({ uses_allowed: 1, completed: 0 })
    expect((await admin.listRegistrationTokens()).map((t) => t.token)).to.include(token.token)
    await admin.deleteRegistrationToken(token.token)
    expect(await admin.getRegistrationToken(token.token)).to.equal(null)

    const memberClient = new MatrixClient(base, member.access_token, new MemoryStorageProvider())
    const roomId = await memberClient.createRoom({ name: 'sdk doomed', preset: 'public_chat' })
    const rooms = await admin.listRooms('sdk doomed')
    expect(rooms.rooms.map((r) => r.room_id)).to.deep.equal([roomId])
    expect((await admin.getRoomState(roomId)).map((e: { type: string }) => e.type)).to.include('m.room.create')
    await admin.deleteRoom(roomId)
    await eventually('the deletion completes', async () => (await admin.getDeleteRoomState(roomId)).some((r: { status: string }) => r.status === 'complete'))
    expect((await admin.listRooms('sdk doomed')).rooms).to.deep.equal([])
    // The SDK reads a deleted token's 404 as null, and the first test's bot asks for its m.direct.
    const expected = [`404 GET /_synapse/admin/v1/registration_tokens/${token.token}`, '404 GET /_matrix/client/v3/user/%40pingbot%3Alocalhost/account_data/m.direct']
    expect(unexpectedErrors(cluster, expected), 'error answers the SDK met').to.deep.equal([])
  })
})
