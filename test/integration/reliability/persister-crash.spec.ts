import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect } from 'chai'
import { freePort } from '../../../api/cli/ports.js'
import { parseListeningLine } from '../../../api/routing/supervisor.js'
import { generateSigningKey } from '../../../storage/events/signing.js'
import { startMyelin, type StartedChild } from '../../support/cli.js'
import { createTestDatabase, redisUrl, type TestDatabase } from '../../support/db.js'
import { runLoad } from './load.js'
import { createRoomEvents, newRoomId, persistOnce, textMessage, untilOk, writePersisterConfig, type ReplicationTarget } from './replication-client.js'
import { expectLinearRoom, expectStoredOnce, messageCounts } from './stored-events.js'

const serverName = 'localhost'
const alice = `@alice:${serverName}`
const requests = 600
const killAfterAnswers = 120

/** One persist request of the load: its own request ID and client transaction, one message. */
interface LoadRequest {
  readonly index: number
  readonly roomId: string
  readonly requestId: string
  readonly txnId: string
  readonly body: string
}

describe('persister crash under load (real process, SIGKILL)', function () {
  this.timeout(90_000)
  let t: TestDatabase
  let dir: string
  let run: StartedChild<number> | undefined

  beforeEach(async () => {
    t = await createTestDatabase()
    dir = await mkdtemp(join(tmpdir(), 'myelin-crash-'))
  })
  afterEach(async () => {
    if (run && run.child.exitCode === null && run.child.signalCode === null) {
      run.child.kill('SIGTERM')
      await run.exited
    }
    await rm(dir, { recursive: true, force: true })
    await t.drop()
  })

  it('answered events stay stored once, retries of unanswered requests persist each exactly once, rooms stay linear', async () => {
    const port = await freePort()
    const target: ReplicationTarget = { base: `http://127.0.0.1:${port}`, secret: randomBytes(24).toString('base64url') }
    const files = await writePersisterConfig(dir, { databaseUrl: t.url, redisUrl: redisUrl(), port, secret: target.secret, serverName, signingKey: generateSigningKey() })
    const start = () => startMyelin(['run', '--config', files[0], '--config', files[1]], parseListeningLine)
    run = await start()

    const rooms = Array.from({ length: 4 }, () => newRoomId(serverName))
    for (const roomId of rooms) await untilOk(() => persistOnce(target, `create-${roomId}`, roomId, createRoomEvents(alice)))

    const load: LoadRequest[] = Array.from({ length: requests }, (_, index) => ({
      index,
      roomId: rooms[index % rooms.length]!,
      requestId: `load-${index}-${randomBytes(4).toString('hex')}`,
      txnId: `txn-${index}`,
      body: `message ${index}`,
    }))
    const send = (r: LoadRequest, requestId = r.requestId) => persistOnce(target, requestId, r.roomId, [textMessage(alice, r.body, { deviceId: 'DEV', txnId: r.txnId })])

    // Load until `killAfterAnswers` requests were answered, then SIGKILL with the rest in flight.
    const answered = new Map<number, string>()
    let killed = false
    const crashed = run
    await runLoad(requests, 48, async (i) => {
      const r = load[i]!
      const answer = await send(r)
      if (answer.status === 200 && !killed) answered.set(i, answer.events![0]!.event_id)
      if (answered.size >= killAfterAnswers && !killed) {
        killed = true
        crashed.child.kill('SIGKILL')
      }
    }, () => killed)
    expect(await crashed.exited).to.equal('SIGKILL')
    expect(answered.size, 'requests answered before the crash').to.be.at.least(killAfterAnswers)
    const unanswered = load.filter((r) => !answered.has(r.index))
    expect(unanswered.length, 'requests left unanswered by the crash').to.be.greaterThan(0)

    run = await start()

    // (a) Everything answered before the crash is stored, once.
    await expectStoredOnce(t.db, [...answered.values()])

    // (b) Retry every unanswered request: half with the same request ID (a replication retry),
    // half with a fresh one and the same txn (a client retrying through another api worker).
    const retried = new Map<number, string>()
    await runLoad(unanswered.length, 32, async (k) => {
      const r = unanswered[k]!
      const requestId = k % 2 === 0 ? r.requestId : `client-retry-${r.index}`
      const [event] = await untilOk(() => send(r, requestId))
      retried.set(r.index, event!.event_id)
    })
    const { perTxn, perBody, eventOfTxn } = await messageCounts(t.db, rooms)
    expect(perTxn, 'event_txn_ids rows per txn').to.deep.equal(Object.fromEntries(load.map((r) => [r.txnId, 1])))
    expect(perBody, 'stored messages per body').to.deep.equal(Object.fromEntries(load.map((r) => [r.body, 1])))
    for (const r of unanswered) expect(retried.get(r.index), `retry of ${r.txnId}`).to.equal(eventOfTxn.get(r.txnId))
    await expectStoredOnce(t.db, [...retried.values()])

    // (c) Retrying an answered request (same request ID) returns the first answer.
    for (const [index, eventId] of [...answered].slice(0, 40)) {
      const [event] = await untilOk(() => send(load[index]!))
      expect(event!.event_id, `retry of answered ${load[index]!.txnId}`).to.equal(eventId)
    }
    const after = await messageCounts(t.db, rooms)
    expect(Object.keys(after.perBody)).to.have.length(requests)

    // (d) Every room is still one chain with a single forward extremity.
    for (const roomId of rooms) await expectLinearRoom(t.db, roomId)
  })
})

