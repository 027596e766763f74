import { randomUUID } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { inspect } from 'node:util'
import { expect } from 'chai'
import { AutojoinRoomsMixin, LogService, MatrixClient, MemoryStorageProvider, type ILogger } from 'matrix-bot-sdk'
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
})
