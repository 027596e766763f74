import { expect } from 'chai'
import { sql } from 'kysely'
import { getForwardExtremities } from '../../../storage/events/event-store.js'
import { migrateUp } from '../../../storage/migrations.js'
import { createTestDatabase, olderMigrations, type OlderMigrations, type TestDatabase } from '../../support/db.js'

describe('migration 0033 (forward extremities on the room head row)', function () {
  this.timeout(30_000)
  let t: TestDatabase
  let older: OlderMigrations

  beforeEach(async () => {
    t = await createTestDatabase({ empty: true })
    older = await olderMigrations('0033')
  })
  afterEach(async () => {
    await t.drop()
    await older.remove()
  })

  it("should carry every room's extremities over, so the next event still follows them", async () => {
    await migrateUp(t.db, { dir: older.dir })
    for (const room of ['!forked:hs', '!linear:hs', '!empty:hs']) {
      await sql`INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES (${room}, '11', '@a:hs', 1)`.execute(t.db)
    }
    for (const [so, id, room, depth] of [[1, '$b', '!forked:hs', 4], [2, '$a', '!forked:hs', 5], [3, '$only', '!linear:hs', 9]] as const) {
      await sql`INSERT INTO events (stream_ordering, event_id, room_id, type, sender, origin_server_ts, received_ts, depth, instance_name)
                VALUES (${so}, ${id}, ${room}, 'm.room.message', '@a:hs', 1, 1, ${depth}, 'persister1')`.execute(t.db)
      await sql`INSERT INTO event_forward_extremities (room_id, event_id) VALUES (${room}, ${id})`.execute(t.db)
    }

    const { applied } = await migrateUp(t.db)
    expect(applied[0]).to.equal('0033-forward-extremities-on-rooms')

    const heads = await t.db.selectFrom('rooms').select(['room_id', 'forward_extremities']).orderBy('room_id').execute()
    expect(heads).to.deep.equal([
      { room_id: '!empty:hs', forward_extremities: [] },
      { room_id: '!forked:hs', forward_extremities: ['$a', '$b'] },
      { room_id: '!linear:hs', forward_extremities: ['$only'] },
    ])
    // Readers go on reading through the old name; it is a view now, and refuses writes.
    expect(await getForwardExtremities(t.db, '!forked:hs')).to.deep.equal([
      { eventId: '$a', depth: 5n },
      { eventId: '$b', depth: 4n },
    ])
    const write = sql`INSERT INTO event_forward_extremities (room_id, event_id) VALUES ('!empty:hs', '$x')`.execute(t.db)
    await write.then(
      () => expect.fail('a write through the view succeeded'),
      (err: { code?: string }) => expect(err.code).to.equal('55000'),
    )
  })
})
