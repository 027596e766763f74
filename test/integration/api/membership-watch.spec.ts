import { expect } from 'chai'
import { createMembershipWatch, type MembershipWatch } from '../../../api/membership-watch.js'
import type { Persister } from '../../../persisters/persister.js'
import { silentLogger } from '../../../storage/logger.js'
import { createNotifier } from '../../../storage/streams/notifier.js'
import { createStreamTracker, type StreamTracker } from '../../../storage/streams/stream-tracker.js'
import { createTestDatabase, type TestDatabase } from '../../support/db.js'
import { createRoomEvents, member, newRoomId, send, startPersister, user } from '../persisters/harness.js'

const alice = user('alice')

describe('MembershipWatch (long-polls woken by their user\'s membership anywhere)', () => {
  let t: TestDatabase
  let persister: Persister
  let tracker: StreamTracker
  let watch: MembershipWatch
  let roomId: string

  before(async () => {
    t = await createTestDatabase()
    persister = await startPersister(t.db, { writer: 'p1' })
    tracker = createStreamTracker({ db: t.db, log: silentLogger(), pollIntervalMs: 20 })
    await tracker.start()
    watch = createMembershipWatch({ db: t.db, tracker, notifier: createNotifier(tracker), log: silentLogger() })
    roomId = newRoomId()
    await send(persister, roomId, ...createRoomEvents(alice))
  })
  after(async () => {
    await tracker.close()
    await persister.close()
    await t.drop()
  })

  async function covered(): Promise<void> {
    const deadline = Date.now() + 5000
    const target = (await t.db.selectFrom('events').select((eb) => eb.fn.max('stream_ordering').as('max')).executeTakeFirstOrThrow()).max
    while (tracker.linearPosition() < BigInt(target ?? 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
  }

  it('wakes only the waiter whose user was invited, among many', async () => {
    await covered()
    const after = tracker.currentToken()
    const users = Array.from({ length: 30 }, (_, i) => user(`waiter${i}`))
    const started = Date.now()
    const waits = users.map((u) => watch.wait(u, after, 1500, new AbortController().signal).then((outcome) => ({ outcome, ms: Date.now() - started })))
    await new Promise((r) => setTimeout(r, 200))
    await send(persister, roomId, member(alice, users[7]!, 'invite'))
    const outcomes = await Promise.all(waits)
    expect(outcomes[7]!.outcome).to.equal('advanced')
    expect(outcomes[7]!.ms, 'woken at the invite, not at the timeout').to.be.below(1200)
    expect(outcomes.filter((_, i) => i !== 7).map((o) => o.outcome)).to.deep.equal(Array(29).fill('timeout'))
  })

  it('wakes at once for a change already stored after its token, and answers aborted on abort', async () => {
    await covered()
    const before = tracker.currentToken()
    const bob = user('bob')
    await send(persister, roomId, member(alice, bob, 'invite'))
    await covered()
    const started = Date.now()
    expect(await watch.wait(bob, before, 3000, new AbortController().signal)).to.equal('advanced')
    expect(Date.now() - started).to.be.below(1000)

    const abort = new AbortController()
    const waiting = watch.wait(user('carol'), tracker.currentToken(), 3000, abort.signal)
    setTimeout(() => abort.abort(), 50)
    expect(await waiting).to.equal('aborted')
  })
})
