import { expect } from 'chai'
import { sql } from 'kysely'
import { loadRequestAnswers } from '../../../persisters/persist-batch.js'
import { migrateUp } from '../../../storage/migrations.js'
import { createTestDatabase, olderMigrations, type OlderMigrations, type TestDatabase } from '../../support/db.js'

describe('migration 0008 (replication answers per request)', function () {
  this.timeout(30_000)
  let t: TestDatabase
  let older: OlderMigrations

  beforeEach(async () => {
    t = await createTestDatabase({ empty: true })
    older = await olderMigrations('0008')
  })
  afterEach(async () => {
    await t.drop()
    await older.remove()
  })

  it('should carry every per-event answer of schema 7 over, so retries still get their first answers', async () => {
    await migrateUp(t.db, { dir: older.dir })
    await sql`INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES ('!r:hs', '11', '@a:hs', 1)`.execute(t.db)
    for (const [so, id] of [[1, '$a'], [2, '$b'], [3, '$c']] as const) {
      await sql`INSERT INTO events (stream_ordering, event_id, room_id, type, sender, origin_server_ts, received_ts, depth, instance_name)
                VALUES (${so}, ${id}, '!r:hs', 'm.room.message', '@a:hs', 1, 1, ${so}, 'persister1')`.execute(t.db)
    }
    // Request two-events answered both; request one-event answered once.
    await sql`INSERT INTO replication_requests (request_id, idx, event_id, inserted_ts)
              VALUES ('two-events', 0, '$a', 5), ('two-events', 1, '$b', 5), ('one-event', 0, '$c', 6)`.execute(t.db)

    const { applied } = await migrateUp(t.db)
    expect(applied[0]).to.equal('0008-request-answers-per-request')

    const answers = await loadRequestAnswers(t.db, ['two-events', 'one-event', 'never-seen'])
    expect(answers.get('two-events')).to.deep.equal([
      { event_id: '$a', stream_ordering: 1n, writer: 'persister1' },
      { event_id: '$b', stream_ordering: 2n, writer: 'persister1' },
    ])
    expect(answers.get('one-event')).to.deep.equal([{ event_id: '$c', stream_ordering: 3n, writer: 'persister1' }])
    expect(answers.has('never-seen')).to.equal(false)
    const pruneIndex = await sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_indexes WHERE indexname = 'replication_requests_inserted'`.execute(t.db)
    expect(pruneIndex.rows[0]?.n).to.equal(1)
  })
})
