import { expect } from 'chai'
import fc from 'fast-check'
import { sql } from 'kysely'
import { roomReadRoutes } from '../../../api/routes/room-reads.js'
import { roomWriteRoutes } from '../../../api/routes/rooms.js'
import { searchRoutes } from '../../../api/routes/search.js'
import { pino } from 'pino'
import { startSearchIndexer } from '../../../api/search-indexer.js'
import { indexForSearch, parseSearchTerm, searchIndexPosition } from '../../../storage/search.js'
import { startApi, v3, type ApiHarness, type Session } from './api-harness.js'
import { createRoomAs, enc, joinAs, sendTextAs } from './read-fixtures.js'
import { remotePdu } from '../persisters/harness.js'

type Answer = {
  search_categories: { room_events?: { count: number; highlights: string[]; next_batch?: string; results: { rank: number; result: Record<string, any>; context?: Record<string, any> }[] } }
}

describe('api search (POST /search, room_events)', function () {
  this.timeout(120_000)
  let h: ApiHarness
  let alice: Session
  let bob: Session
  let carol: Session
  let room: string
  before(async () => {
    h = await startApi({ roomRoutes: (services) => [roomReadRoutes(services), roomWriteRoutes(services), searchRoutes(services)] })
    alice = await h.register('alice')
    bob = await h.register('bob')
    carol = await h.register('carol')
    room = await createRoom(alice, { preset: 'public_chat', name: 'Gardening club', topic: 'tomatoes and roses' })
    await join(bob, room)
  })
  after(() => h.close())

  const createRoom = (session: Session, body: Record<string, unknown>) => createRoomAs(h, session, body)
  const join = (session: Session, roomId: string) => joinAs(h, session, roomId)
  const send = (session: Session, roomId: string, body: string) => sendTextAs(h, session, roomId, body)
  const flush = () => h.process!.searchIndexer!.runOnce()
  const search = async (session: Session | undefined, roomEvents: Record<string, unknown> | undefined, nextBatch?: string) => {
    const url = `${v3}/search${nextBatch === undefined ? '' : `?next_batch=${enc(nextBatch)}`}`
    return h.call('POST', url, { ...(session && { token: session.access_token }), body: { search_categories: roomEvents === undefined ? {} : { room_events: roomEvents } } })
  }
  const found = async (session: Session, roomEvents: Record<string, unknown>, nextBatch?: string) => {
    const res = await search(session, roomEvents, nextBatch)
    expect(res.statusCode, res.body).to.equal(200)
    return res.json<Answer>().search_categories.room_events!
  }
  const bodies = (answer: { results: { result: Record<string, any> }[] }) => answer.results.map((r) => r.result['content']?.['body'] ?? r.result['content']?.['name'] ?? r.result['content']?.['topic'])

  it('should find messages by words, prefixes, phrases, exclusions and alternatives, with count and highlights', async () => {
    await send(alice, room, 'The quick brown fox jumps')
    await send(alice, room, 'lazy dogs sleep all day')
    await send(bob, room, 'quickly now, please')
    await send(bob, room, 'hello world')
    await flush()

    const quick = await found(bob, { search_term: 'quick', order_by: 'recent' })
    // "quick" begins "quickly": both, newest first.
    expect(bodies(quick)).to.deep.equal(['quickly now, please', 'The quick brown fox jumps'])
    expect(quick.count).to.equal(2)
    expect(quick.highlights).to.deep.equal(['quick'])
    expect(quick.results[0]!.result).to.include({ room_id: room, sender: bob.user_id, type: 'm.room.message' })
    expect(quick).not.to.have.property('next_batch')

    expect(bodies(await found(bob, { search_term: 'dog' }))).to.deep.equal(['lazy dogs sleep all day'])
    expect(bodies(await found(bob, { search_term: 'hel wor' }))).to.deep.equal(['hello world'])
    expect(bodies(await found(bob, { search_term: 'quick -brown', order_by: 'recent' }))).to.deep.equal(['quickly now, please'])
    expect(bodies(await found(bob, { search_term: '"brown fox"' }))).to.deep.equal(['The quick brown fox jumps'])
    expect(bodies(await found(bob, { search_term: '"fox brown"' }))).to.deep.equal([])
    expect(bodies(await found(bob, { search_term: 'hello OR lazy', order_by: 'recent' }))).to.deep.equal(['hello world', 'lazy dogs sleep all day'])
    // Nothing to search for: no results, not an error.
    expect(await found(bob, { search_term: '!!! ...' })).to.deep.equal({ count: 0, highlights: [], results: [] })

    // By rank: the message that says "quick" twice comes first.
    await send(alice, room, 'quick quick, the quickest way')
    await flush()
    const ranked = await found(bob, { search_term: 'quick' })
    expect(bodies(ranked)[0]).to.equal('quick quick, the quickest way')
    const ranks = ranked.results.map((r) => r.rank)
    expect(ranks).to.deep.equal([...ranks].sort((a, b) => b - a))
  })

  it('should index room names and topics, and search the keys asked for', async () => {
    await flush()
    expect(bodies(await found(alice, { search_term: 'gardening' }))).to.deep.equal(['Gardening club'])
    expect(bodies(await found(alice, { search_term: 'roses', keys: ['content.topic'] }))).to.deep.equal(['tomatoes and roses'])
    expect(bodies(await found(alice, { search_term: 'roses', keys: ['content.body', 'content.name'] }))).to.deep.equal([])
  })

  it('should find only events of rooms the user is joined to now, and may see', async () => {
    const secret = await createRoom(alice, { preset: 'private_chat' })
    await send(alice, secret, 'zebra secrets')
    // history_visibility "joined": carol, joining later, does not see what came before.
    const later = await createRoom(alice, { preset: 'public_chat', initial_state: [{ type: 'm.room.history_visibility', state_key: '', content: { history_visibility: 'joined' } }] })
    await send(alice, later, 'zebra before carol')
    await join(carol, later)
    await send(alice, later, 'zebra after carol')
    await flush()

    expect(bodies(await found(alice, { search_term: 'zebra', order_by: 'recent' }))).to.deep.equal(['zebra after carol', 'zebra before carol', 'zebra secrets'])
    expect(bodies(await found(carol, { search_term: 'zebra' }))).to.deep.equal(['zebra after carol'])
    expect(bodies(await found(bob, { search_term: 'zebra' }))).to.deep.equal([])

    // Filters: rooms, not_rooms, senders, not_senders, types.
    expect(bodies(await found(alice, { search_term: 'zebra', filter: { rooms: [secret] } }))).to.deep.equal(['zebra secrets'])
    expect(bodies(await found(alice, { search_term: 'zebra', order_by: 'recent', filter: { not_rooms: [secret] } }))).to.deep.equal(['zebra after carol', 'zebra before carol'])
    expect(bodies(await found(alice, { search_term: 'zebra', filter: { senders: [bob.user_id] } }))).to.deep.equal([])
    expect(bodies(await found(alice, { search_term: 'zebra', filter: { not_senders: [alice.user_id] } }))).to.deep.equal([])
    expect(bodies(await found(alice, { search_term: 'zebra', filter: { not_types: ['m.room.*'] } }))).to.deep.equal([])

    // A user who leaves finds nothing of the room any more.
    expect((await h.call('POST', `${v3}/rooms/${enc(later)}/leave`, { token: carol.access_token, body: {} })).statusCode).to.equal(200)
    expect(bodies(await found(carol, { search_term: 'zebra' }))).to.deep.equal([])
  })

  it('should not find redacted events, indexed or not yet', async () => {
    const indexed = await send(bob, room, 'walrus one')
    await flush()
    const notYet = await send(bob, room, 'walrus two')
    for (const [i, eventId] of [indexed, notYet].entries()) {
      const res = await h.call('PUT', `${v3}/rooms/${enc(room)}/redact/${enc(eventId)}/r${i}`, { token: bob.access_token, body: {} })
      expect(res.statusCode).to.equal(200)
    }
    await send(bob, room, 'walrus three')
    await flush()
    expect(bodies(await found(alice, { search_term: 'walrus' }))).to.deep.equal(['walrus three'])
    // The index holds no entry for either.
    const entries = await h.t.db.selectFrom('event_search').select('event_id').where('event_id', 'in', [indexed, notYet]).execute()
    expect(entries).to.deep.equal([])
  })

  it('should find history imported into a room past, after its live events, and not what imported redactions redact', async () => {
    const imported = await createRoom(alice, { preset: 'public_chat' })
    const live = await send(alice, imported, 'narwhal sighted today')
    const text = (body: string) => ({ msgtype: 'm.text', body })
    const tales = remotePdu(imported, { prevEvents: [], depth: 1, content: text('ancient narwhal tales') })
    const songs = remotePdu(imported, { prevEvents: [tales['event_id'] as string], depth: 2, content: text('ancient narwhal songs') })
    const redaction = remotePdu(imported, { type: 'm.room.redaction', content: { redacts: songs['event_id'] }, prevEvents: [songs['event_id'] as string], depth: 3 })
    const answers = await h.process!.persister!.importEvents(imported, [tales, songs, redaction])
    expect(answers.every((answer) => answer.stream_ordering < 0n)).to.equal(true)

    // The backfill stream's tracker learns the import's position on the bus; the next pass indexes it.
    const lowest = answers.map((a) => a.stream_ordering).reduce((a, b) => (a < b ? a : b))
    const backfill = h.process!.backfillTracker!
    for (let waited = 0; backfill.linearPosition() < -lowest; waited += 20) {
      expect(waited, 'the backfill tracker learns the import').to.be.below(5000)
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    await flush()
    const results = await found(alice, { search_term: 'narwhal', order_by: 'recent', filter: { rooms: [imported] } })
    expect(bodies(results)).to.deep.equal(['narwhal sighted today', 'ancient narwhal tales'])
    expect(results.results.map((r) => r.result['event_id'])).to.deep.equal([live, tales['event_id']])
    expect(await searchIndexPosition(h.t.db, 'backfill')).to.equal(backfill.linearPosition())
    const entries = await h.t.db.selectFrom('event_search').select('event_id').where('event_id', '=', songs['event_id'] as string).execute()
    expect(entries, 'the imported redaction dropped its target').to.deep.equal([])

    // Paging crosses from live events into imported history (a negative cursor).
    const first = await found(alice, { search_term: 'narwhal', order_by: 'recent', filter: { rooms: [imported], limit: 1 } })
    expect(bodies(first)).to.deep.equal(['narwhal sighted today'])
    const second = await found(alice, { search_term: 'narwhal', order_by: 'recent', filter: { rooms: [imported], limit: 1 } }, first.next_batch)
    expect(bodies(second)).to.deep.equal(['ancient narwhal tales'])
    const third = await found(alice, { search_term: 'narwhal', order_by: 'recent', filter: { rooms: [imported], limit: 1 } }, second.next_batch)
    expect(third.results).to.deep.equal([])
    expect(third).not.to.have.property('next_batch')

    // Indexing the backfill stream again from its start writes nothing twice.
    await h.t.db.updateTable('event_search_position').set({ backfill_id: 0n }).execute()
    const again = await indexForSearch(h.t.db, backfill.linearPosition(), 1000, 'backfill')
    expect(again).to.deep.equal({ from: 0n, reached: backfill.linearPosition(), indexed: 0, removed: 0 })
  })

  it('should page through every result once, in order, in both orders', async () => {
    const pages = await createRoom(alice, { preset: 'public_chat' })
    const sent: string[] = []
    // Words repeated differently, so that ranks differ and tie.
    for (let i = 0; i < 23; i++) sent.push(await send(alice, pages, `${'kiwi '.repeat(1 + (i % 4))}number ${i}`))
    await flush()
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 30 }), fc.constantFrom('rank', 'recent'), async (limit, order) => {
        const seen: string[] = []
        let next: string | undefined
        let ranks: number[] = []
        for (let page = 0; page < 30; page++) {
          const answer = await found(alice, { search_term: 'kiwi', order_by: order, filter: { rooms: [pages], limit } }, next)
          expect(answer.count).to.equal(23)
          expect(answer.results.length).to.be.at.most(limit)
          seen.push(...answer.results.map((r) => r.result['event_id'] as string))
          ranks = ranks.concat(answer.results.map((r) => r.rank))
          next = answer.next_batch
          if (next === undefined) break
        }
        expect([...seen].sort()).to.deep.equal([...sent].sort())
        if (order === 'recent') expect(seen).to.deep.equal([...sent].reverse())
        else expect(ranks).to.deep.equal([...ranks].sort((a, b) => b - a))
      }),
      { numRuns: 12 },
    )
  })

  it('should give each result its context and the senders profiles', async () => {
    const ctx = await createRoom(alice, { preset: 'public_chat' })
    await join(bob, ctx)
    await send(alice, ctx, 'before one')
    await send(bob, ctx, 'before two')
    await send(alice, ctx, 'the narwhal')
    await send(bob, ctx, 'after one')
    await flush()
    const answer = await found(alice, { search_term: 'narwhal', event_context: { before_limit: 2, after_limit: 1, include_profile: true } })
    const context = answer.results[0]!.context!
    expect(context['events_before'].map((e: any) => e.content.body)).to.deep.equal(['before two', 'before one'])
    expect(context['events_after'].map((e: any) => e.content.body)).to.deep.equal(['after one'])
    expect(context['start']).to.be.a('string')
    expect(context['end']).to.be.a('string')
    expect(Object.keys(context['profile_info']).sort()).to.deep.equal([alice.user_id, bob.user_id].sort())
    expect(context['profile_info'][alice.user_id]).to.deep.equal({ displayname: 'alice' })
    // Without event_context: none.
    expect((await found(alice, { search_term: 'narwhal' })).results[0]).not.to.have.property('context')
  })

  it('should answer malformed requests with Matrix errors, and never a 500', async () => {
    const status = async (res: Awaited<ReturnType<typeof search>>) => [res.statusCode, res.json<{ errcode: string }>().errcode]
    expect(await status(await search(undefined, { search_term: 'x' }))).to.deep.equal([401, 'M_MISSING_TOKEN'])
    expect(await status(await h.call('POST', `${v3}/search`, { token: alice.access_token, body: {} }))).to.deep.equal([400, 'M_BAD_JSON'])
    expect(await status(await search(alice, {}))).to.deep.equal([400, 'M_BAD_JSON'])
    expect(await status(await search(alice, { search_term: 'x', keys: ['content.msgtype'] }))).to.deep.equal([400, 'M_BAD_JSON'])
    expect(await status(await search(alice, { search_term: 'x', order_by: 'oldest' }))).to.deep.equal([400, 'M_BAD_JSON'])
    expect(await status(await search(alice, { search_term: 'x', event_context: { before_limit: -1 } }))).to.deep.equal([400, 'M_BAD_JSON'])
    expect(await status(await search(alice, { search_term: 'x' }, 'garbage'))).to.deep.equal([400, 'M_INVALID_PARAM'])
    expect(await status(await search(alice, { search_term: 'x', order_by: 'recent' }, 'k.0.5.12'))).to.deep.equal([400, 'M_INVALID_PARAM'])
    // No category asked: an empty answer.
    const none = await search(alice, undefined)
    expect([none.statusCode, none.json()]).to.deep.equal([200, { search_categories: {} }])

    await fc.assert(
      fc.asyncProperty(fc.string({ maxLength: 40 }), fc.constantFrom('rank', 'recent'), async (term, order) => {
        const res = await search(alice, { search_term: term, order_by: order })
        expect(res.statusCode, `${JSON.stringify(term)}: ${res.body}`).to.equal(200)
      }),
      { numRuns: 150 },
    )
  })

  it('should turn any term into a valid query, and index each event once however the indexing runs', async () => {
    expect(parseSearchTerm('hello "big world" -spam')).to.deep.equal({ tsquery: "'hello':* & 'big world' & !'spam':*", highlights: ['hello', 'big', 'world'] })
    expect(parseSearchTerm("it's a \\ or b")).to.deep.equal({ tsquery: "'it s':* & ('a':* | 'b':*)", highlights: ['it', 's', 'a', 'b'] })
    // Whatever the term, PostgreSQL takes the query.
    await fc.assert(
      fc.asyncProperty(fc.string({ maxLength: 30, unit: fc.constantFrom('a', 'b', ' ', '"', "'", '\\', '-', '|', '&', '!', ':', '*', '(', ')', 'o', 'r', 'é', '日') }), async (term) => {
        const { tsquery } = parseSearchTerm(term)
        await sql`SELECT to_tsquery('english', ${tsquery})`.execute(h.t.db)
      }),
      { numRuns: 200 },
    )

    // Indexers side by side (three here and the process's own), from the start of the stream
    // again: every searchable event once, the ones indexed before included.
    const busy = await createRoom(alice, { preset: 'public_chat' })
    await Promise.all(Array.from({ length: 40 }, (_, i) => send(alice, busy, `octopus ${i}`)))
    await flush()
    const before = Number((await sql<{ n: string }>`SELECT count(*)::text AS n FROM event_search`.execute(h.t.db)).rows[0]!.n)
    await h.t.db.deleteFrom('event_search').where('room_id', '=', busy).execute()
    await h.t.db.updateTable('event_search_position').set({ stream_ordering: 0 }).execute()
    const upTo = (await h.t.db.selectFrom('events').select((eb) => eb.fn.max('stream_ordering').as('max')).executeTakeFirstOrThrow()).max as bigint
    const runs = await Promise.all([0, 1, 2].map(async () => {
      const steps: bigint[] = []
      for (;;) {
        const { from, reached } = await indexForSearch(h.t.db, BigInt(upTo), 7)
        if (reached === from) return steps
        steps.push(reached)
      }
    }))
    expect(runs.flat().length).to.be.above(2)
    expect(await searchIndexPosition(h.t.db)).to.equal(BigInt(upTo))
    const rows = await h.t.db.selectFrom('event_search').select('event_id').where('room_id', '=', busy).execute()
    expect(rows).to.have.length(40)
    expect(Number((await sql<{ n: string }>`SELECT count(*)::text AS n FROM event_search`.execute(h.t.db)).rows[0]!.n)).to.equal(before)
    await flush()
    expect((await found(alice, { search_term: 'octopus', filter: { rooms: [busy], limit: 100 } })).results).to.have.length(40)
  })

  it('should catch up on history from the start, batch after batch, saying how far it got', async () => {
    await flush()
    const count = async () => Number((await sql<{ n: string }>`SELECT count(*)::text AS n FROM event_search`.execute(h.t.db)).rows[0]!.n)
    const indexed = await count()
    expect(indexed).to.be.above(50)
    // As after the migration on a deployment with history: nothing indexed, position 0.
    await h.process!.searchIndexer!.close()
    await h.t.db.deleteFrom('event_search').execute()
    await h.t.db.updateTable('event_search_position').set({ stream_ordering: 0, backfill_id: 0n }).execute()
    const lines: string[] = []
    const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(line) })
    const indexer = startSearchIndexer({ db: h.t.db, tracker: h.process!.services!.tracker, backfill: h.process!.backfillTracker!, log, batchSize: 10, tickMs: 60_000 })
    try {
      await indexer.runOnce()
      expect(await count()).to.equal(indexed)
      expect(await searchIndexPosition(h.t.db)).to.equal(h.process!.services!.tracker.linearPosition())
      expect(await searchIndexPosition(h.t.db, 'backfill')).to.equal(h.process!.backfillTracker!.linearPosition())
      expect(lines.filter((l) => l.includes('search index catching up'))).to.have.length.above(0)
    } finally {
      await indexer.close()
    }
  })

  it('should cross a gap in the stream wider than a batch, each batch a bounded range of IDs', async () => {
    // No indexer runs any more (the test above closed them): this one drives indexForSearch alone.
    const start = await searchIndexPosition(h.t.db)
    // 1,000 IDs taken and never used, as rolled-back transactions leave them.
    await sql`SELECT setval('events_stream_seq', nextval('events_stream_seq') + 1000)`.execute(h.t.db)
    await send(alice, room, 'after the gap: zucchini')
    const upTo = (await h.t.db.selectFrom('events').select((eb) => eb.fn.max('stream_ordering').as('max')).executeTakeFirstOrThrow()).max as bigint
    expect(Number(upTo - start)).to.be.above(1000)
    const steps: { from: bigint; reached: bigint; indexed: number }[] = []
    for (;;) {
      const step = await indexForSearch(h.t.db, upTo, 100)
      if (step.reached === step.from) break
      steps.push(step)
    }
    expect(steps).to.have.length(Math.ceil(Number(upTo - start) / 100))
    expect(steps.every((step, i) => step.reached - step.from <= 100n && step.from === (i === 0 ? start : steps[i - 1]!.reached))).to.equal(true)
    expect(steps.reduce((n, step) => n + step.indexed, 0)).to.equal(1)
    expect(await searchIndexPosition(h.t.db)).to.equal(upTo)
    expect(bodies(await found(alice, { search_term: 'zucchini' }))).to.deep.equal(['after the gap: zucchini'])
    // Asked again up to a position it has passed, it stays where it is.
    const behind = await indexForSearch(h.t.db, start, 100)
    expect(behind).to.deep.include({ from: upTo, reached: upTo, indexed: 0 })
  })
})
