import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect } from 'chai'
import { createTestDatabase, redisUrl, type TestDatabase } from '../../support/db.js'
import { startGateway } from '../../support/push-gateway.js'
import { eventually } from './load.js'
import { apiSend, register, startTestCluster, type TestCluster } from './test-cluster.js'

const messages = 40
const killAfterPushes = 10

/**
 * `myelin cluster` (2 persisters, background tasks and the push sender on persister1) with a
 * real push gateway: persister1 is SIGKILLed while it pushes, the supervisor restarts it, and
 * every message is pushed, none lost, at most the one in flight twice.
 */
describe('push notifications across a crash (real processes, SIGKILL the process that sends them)', function () {
  this.timeout(120_000)
  let t: TestDatabase
  let dir: string
  let cluster: TestCluster
  let gateway: Awaited<ReturnType<typeof startGateway>>

  before(async () => {
    t = await createTestDatabase()
    dir = await mkdtemp(join(tmpdir(), 'myelin-push-crash-'))
    gateway = await startGateway()
    const settings = join(dir, 'push.yaml')
    // The gateway is on loopback, which the default blocklist refuses.
    await writeFile(settings, 'push: { retry_initial_ms: 100, retry_max_ms: 500, ip_range_blocklist: [] }\n')
    cluster = await startTestCluster({ databaseUrl: t.url, redisUrl: redisUrl(), dataDir: join(dir, 'data'), configFiles: [settings] })
  })
  after(async () => {
    await cluster?.stop()
    await gateway?.close()
    await rm(dir, { recursive: true, force: true })
    await t?.drop()
  })

  it('SIGKILL of the pushing process: every message pushed after its restart, none lost, at most one twice', async () => {
    const base = cluster.run.ready.client_url
    const [alice, bob] = [await register(base, 'alice'), await register(base, 'bob')]
    const call = async (token: string, method: string, path: string, body: unknown) => {
      const res = await fetch(`${base}/_matrix/client/v3${path}`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) })
      expect(res.status, `${method} ${path}: ${await res.clone().text()}`).to.equal(200)
      return (await res.json()) as Record<string, unknown>
    }
    const { room_id: roomId } = (await call(alice.access_token, 'POST', '/createRoom', { preset: 'public_chat' })) as { room_id: string }
    await call(bob.access_token, 'POST', `/join/${encodeURIComponent(roomId)}`, {})
    await call(bob.access_token, 'POST', '/pushers/set', {
      kind: 'http', app_id: 'org.example.app', pushkey: 'bob-phone', app_display_name: 'Example', device_display_name: 'Phone', lang: 'en', data: { url: gateway.url },
    })

    // A gateway that takes 30 ms per notification: the kill lands inside a batch of pushes.
    gateway.delayMs = 30
    const sent: string[] = []
    // The same txn ID until 200, as a client does: each message is stored once.
    const send = async (i: number) => sent.push(await apiSend(base, alice.access_token, roomId, `m${i}`, `message ${i}`))
    for (let i = 0; i < killAfterPushes; i++) await send(i)
    await eventually('the first pushes arrive', () => gateway.received.length >= killAfterPushes / 2, 20_000)
    // Killed while it pushes the rest of the first batch and the messages that follow.
    const rest = (async () => {
      for (let i = killAfterPushes; i < messages; i++) await send(i)
    })()
    process.kill(cluster.pidOf('persister1'), 'SIGKILL')
    await rest
    await eventually('the supervisor restarts persister1', () => cluster.restartsOf('persister1') >= 1)
    await eventually('every message is pushed', () => sent.every((id) => gateway.received.some((n) => n.event_id === id)), 60_000)

    const received = gateway.received.map((n) => n.event_id)
    const repeated = received.filter((id, i) => received.indexOf(id) !== i)
    expect(repeated.length, `pushed twice: ${repeated.join(', ')}`).to.be.at.most(1)
    expect(new Set(received)).to.deep.equal(new Set(sent))
  })
})
