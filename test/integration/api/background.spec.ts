import { expect } from 'chai'
import { replicationRequestLifetimeMs, startBackgroundTasks, tokenRevocationLifetimeMs, txnIdLifetimeMs } from '../../../api/background.js'
import { silentLogger } from '../../../storage/logger.js'
import { Registry } from 'prom-client'
import { createTestDatabase, type TestDatabase } from '../../support/db.js'

describe('api/background: housekeeping', function () {
  this.timeout(20_000)
  let t: TestDatabase
  beforeEach(async () => {
    t = await createTestDatabase()
  })
  afterEach(async () => {
    await t.drop()
  })

  it('should expire txn IDs after a day, replication answers and token revocations after an hour, keeping younger rows', async () => {
    const now = 10_000_000_000
    const row = (age: number, i: number) => ({ room_id: '!r:hs', user_id: '@u:hs', device_id: 'D', txn_id: `t${i}`, event_id: `$e${i}`, inserted_ts: BigInt(now - age) })
    await t.db.insertInto('event_txn_ids').values([row(txnIdLifetimeMs + 1, 1), row(txnIdLifetimeMs - 1000, 2)]).execute()
    await t.db
      .insertInto('replication_requests')
      .values([
        { request_id: 'old', first_idx: 0, event_ids: ['$a'], inserted_ts: BigInt(now - replicationRequestLifetimeMs - 1) },
        { request_id: 'new', first_idx: 0, event_ids: ['$b'], inserted_ts: BigInt(now - 1000) },
      ])
      .execute()
    await t.db
      .insertInto('access_token_revocations')
      .values([
        { token_id: 1n, revoked_ts: BigInt(now - tokenRevocationLifetimeMs - 1) },
        { token_id: 2n, revoked_ts: BigInt(now - 1000) },
      ])
      .execute()
    await t.db
      .insertInto('to_device_txns')
      .values([
        { user_id: '@a:hs', device_id: 'D', txn_id: 'old', inserted_ts: BigInt(now - txnIdLifetimeMs - 1) },
        { user_id: '@a:hs', device_id: 'D', txn_id: 'recent', inserted_ts: BigInt(now - 1000) },
      ])
      .execute()
    const registry = new Registry()
    const tasks = startBackgroundTasks({ db: t.db, log: silentLogger(), registry, clock: () => now, intervalMs: 3_600_000 })
    try {
      // The run at start and this one may overlap; between them each old row goes exactly once.
      await tasks.runOnce()
      expect((await t.db.selectFrom('event_txn_ids').select('txn_id').execute()).map((r) => r.txn_id)).to.deep.equal(['t2'])
      expect((await t.db.selectFrom('replication_requests').select('request_id').execute()).map((r) => r.request_id)).to.deep.equal(['new'])
      expect((await t.db.selectFrom('access_token_revocations').select('token_id').execute()).map((r) => String(r.token_id))).to.deep.equal(['2'])
      expect((await t.db.selectFrom('to_device_txns').select('txn_id').execute()).map((r) => r.txn_id)).to.deep.equal(['recent'])
      // The run at start may have deleted the rows and not counted them yet: wait for it.
      await tasks.close()
      const metrics = await registry.metrics()
      expect(metrics).to.match(/myelin_background_expired_rows_total\{table="event_txn_ids"\} 1\n/)
      expect(metrics).to.match(/myelin_background_expired_rows_total\{table="replication_requests"\} 1\n/)
      expect(metrics).to.match(/myelin_background_expired_rows_total\{table="access_token_revocations"\} 1\n/)
      expect(metrics).to.match(/myelin_background_expired_rows_total\{table="to_device_txns"\} 1\n/)
    } finally {
      await tasks.close()
    }
  })
})
