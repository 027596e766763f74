import { expect } from 'chai'
import { sql } from 'kysely'
import { writeBatch } from '../../../storage/events/append-events.js'
import type { EventBatchRows } from '../../../storage/events/append-events.js'
import { createTestDatabase, type TestDatabase } from '../../support/db.js'

const roomId = '!append:hs.test'

function rows(events: { id: string; so: bigint; json: string }[], requestId = 'req'): EventBatchRows {
  return {
    events: events.map((e) => ({
      stream_ordering: e.so,
      event_id: e.id,
      room_id: roomId,
      type: 'm.room.message',
      state_key: null,
      sender: '@a:hs.test',
      origin_server_ts: 1,
      received_ts: 2,
      depth: Number(e.so),
      instance_name: 'p1',
      redacts: null,
      membership: null,
    })),
    eventJson: events.map((e) => ({ event_id: e.id, room_id: roomId, json: e.json })),
    edges: [],
    stateEvents: [],
    redactions: [],
    memberships: [],
    relations: [],
    txnIds: [],
    replicationRequests: [{ request_id: requestId, first_idx: 3, event_ids: events.map((e) => e.id), inserted_ts: 5 }],
  }
}

describe('writeBatch (one statement per batch)', () => {
  let t: TestDatabase
  beforeEach(async () => {
    t = await createTestDatabase()
    await sql`INSERT INTO rooms (room_id, room_version, creator, created_ts, owner, epoch, forward_extremities) VALUES (${roomId}, '11', '@a:hs.test', 1, 'p1', 1, '{$kept,$old}')`.execute(t.db)
  })
  afterEach(async () => {
    await t.drop()
  })

  it('should store JSON texts exactly, whether they travel newline-joined or (with a raw newline) as an array', async () => {
    const texts = ['{"a":"quote \\" backslash \\\\ é 😀"}', '{"b":[1,2,{"c":null}]}', '{"raw":"line one\nline two"}', '{}']
    for (const [k, batch] of [texts.slice(0, 2), texts.slice(2)].entries()) {
      await writeBatch(t.db as never, { rows: rows(batch.map((json, i) => ({ id: `$e${k}${i}`, so: BigInt(10 * k + i + 1), json })), `req${k}`) })
    }
    const stored = await t.db.selectFrom('event_json').select(['event_id', 'json']).orderBy('event_id').execute()
    expect(stored.map((r) => r.json)).to.deep.equal(texts)
    const answers = await t.db.selectFrom('replication_requests').select(['first_idx', 'event_ids']).orderBy('request_id').execute()
    expect(answers.map((a) => a.event_ids)).to.deep.equal([
      ['$e00', '$e01'],
      ['$e10', '$e11'],
    ])
  })

  it('should replace the forward extremities, advance the head and upsert current state in the same statement', async () => {
    await writeBatch(t.db as never, {
      rows: rows([{ id: '$new', so: 7n, json: '{}' }]),
      currentState: [{ room_id: roomId, type: 'm.room.name', state_key: '', event_id: '$new', membership: null, stream_ordering: 7n }],
      advances: [{ roomId, extremities: ['$new', '$kept'], maxDepth: 7n, lastStreamOrdering: 7n }],
    })
    const extremities = await t.db.selectFrom('event_forward_extremities').select('event_id').where('room_id', '=', roomId).orderBy('event_id').execute()
    expect(extremities.map((x) => x.event_id)).to.deep.equal(['$kept', '$new'])
    const head = await t.db.selectFrom('rooms').select(['max_depth', 'last_stream_ordering']).where('room_id', '=', roomId).executeTakeFirstOrThrow()
    expect(head).to.deep.equal({ max_depth: 7n, last_stream_ordering: 7n })
    const state = await t.db.selectFrom('current_state_events').select(['event_id', 'stream_ordering']).where('room_id', '=', roomId).execute()
    expect(state).to.deep.equal([{ event_id: '$new', stream_ordering: 7n }])
  })

  it('should advance a room with one HOT update of its head row and nothing left behind for vacuum', async () => {
    // The forward extremities used to be a table rewritten by DELETE + INSERT on every batch:
    // dead tuples the persist statement then scanned. Now the set rides in the head row, and
    // the update changes no indexed column.
    await t.db.transaction().execute(async (trx) => {
      await writeBatch(trx, {
        rows: rows([{ id: '$next', so: 8n, json: '{}' }]),
        advances: [{ roomId, extremities: ['$next', '$next'], maxDepth: 8n, lastStreamOrdering: 8n }],
      })
      const { rows: stats } = await sql<{ relname: string; upd: number; hot: number; del: number }>`
        SELECT relname, n_tup_upd::int AS upd, n_tup_hot_upd::int AS hot, n_tup_del::int AS del FROM pg_stat_xact_user_tables
        WHERE relname IN ('rooms', 'events', 'event_json', 'event_edges') ORDER BY relname`.execute(trx)
      expect(stats).to.deep.equal([
        { relname: 'event_edges', upd: 0, hot: 0, del: 0 },
        { relname: 'event_json', upd: 0, hot: 0, del: 0 },
        { relname: 'events', upd: 0, hot: 0, del: 0 },
        { relname: 'rooms', upd: 1, hot: 1, del: 0 },
      ])
    })
    const head = await t.db.selectFrom('rooms').select(['forward_extremities', 'max_depth']).where('room_id', '=', roomId).executeTakeFirstOrThrow()
    expect(head).to.deep.equal({ forward_extremities: ['$next'], max_depth: 8n })
  })

  it('should keep a room that a batch does not advance as it was', async () => {
    await writeBatch(t.db as never, { rows: rows([{ id: '$other', so: 9n, json: '{}' }]) })
    const extremities = await t.db.selectFrom('event_forward_extremities').select('event_id').where('room_id', '=', roomId).orderBy('event_id').execute()
    expect(extremities.map((x) => x.event_id)).to.deep.equal(['$kept', '$old'])
  })
})
