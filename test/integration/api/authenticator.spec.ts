import { expect } from 'chai'
import { createAuthenticator, type Authenticator } from '../../../api/authenticator.js'
import { createAccessToken, createUser, deleteDeviceTokens } from '../../../storage/accounts.js'
import { createTestDatabase, type TestDatabase } from '../../support/db.js'

/**
 * Token caches of several processes: one process revokes (logout, deactivation), the others,
 * holding the token in their 30 s caches, stop accepting it within about a second.
 */
describe('authenticator: revocations reach every process', () => {
  let t: TestDatabase
  let otherProcess: Authenticator

  before(async () => {
    t = await createTestDatabase()
  })
  after(() => t.drop())
  beforeEach(() => {
    otherProcess = createAuthenticator({ db: t.db, ttlMs: 30_000, revocationPollMs: 100 })
  })

  async function tokenFor(name: string, device: string): Promise<{ userId: string; token: string }> {
    const userId = `@${name}:hs.test`
    await createUser(t.db, { userId, passwordHash: null, nowMs: Date.now() })
    const { token } = await createAccessToken(t.db, { userId, deviceId: device, nowMs: Date.now() })
    return { userId, token }
  }

  /** Milliseconds until `auth` refuses `token`, or Infinity after `limitMs`. */
  async function refusedAfter(auth: Authenticator, token: string, limitMs: number): Promise<number> {
    const started = Date.now()
    while (Date.now() - started < limitMs) {
      if ((await auth.authenticate(token)) === undefined) return Date.now() - started
      await new Promise((resolve) => setTimeout(resolve, 25))
    }
    return Infinity
  }

  it('drops a token another process deleted (logout) from its cache within a second, and keeps the others', async () => {
    const alice = await tokenFor('alice', 'PHONE')
    const aliceLaptop = await createAccessToken(t.db, { userId: alice.userId, deviceId: 'LAPTOP', nowMs: Date.now() })
    expect(await otherProcess.authenticate(alice.token)).to.include({ userId: alice.userId, deviceId: 'PHONE' })
    expect(await otherProcess.authenticate(aliceLaptop.token)).to.include({ deviceId: 'LAPTOP' })
    await deleteDeviceTokens(t.db, alice.userId, 'PHONE')
    expect(await refusedAfter(otherProcess, alice.token, 3000)).to.be.below(1500)
    expect(await otherProcess.authenticate(aliceLaptop.token), 'other devices keep working').to.include({ deviceId: 'LAPTOP' })
  })

  it('drops the tokens of a user deactivated by another process', async () => {
    const bob = await tokenFor('bob', 'DESK')
    expect(await otherProcess.authenticate(bob.token)).to.include({ userId: bob.userId })
    await t.db.updateTable('users').set({ deactivated: true }).where('user_id', '=', bob.userId).execute()
    expect(await refusedAfter(otherProcess, bob.token, 3000)).to.be.below(1500)
  })

  it('without the revocation poll, serves the cached token until it expires (what the poll fixes)', async () => {
    const carol = await tokenFor('carol', 'TAB')
    const noPoll = createAuthenticator({ db: t.db, ttlMs: 30_000, revocationPollMs: 0 })
    expect(await noPoll.authenticate(carol.token)).to.include({ userId: carol.userId })
    await deleteDeviceTokens(t.db, carol.userId, 'TAB')
    expect(await refusedAfter(noPoll, carol.token, 600)).to.equal(Infinity)
    expect(await refusedAfter(otherProcess, carol.token, 600), 'a fresh cache looks the token up and refuses it at once').to.be.below(100)
  })
})
