import { readFile } from 'node:fs/promises'
import { expect } from 'chai'
import fc from 'fast-check'
import { sql } from 'kysely'
import { roomReadRoutes } from '../../../api/routes/room-reads.js'
import { roomWriteRoutes } from '../../../api/routes/rooms.js'
import { syncRoutes } from '../../../api/routes/sync.js'
import { startApi, v3, type ApiHarness, type Session } from './api-harness.js'
import { createSharedRoom, enc, syncAs } from './read-fixtures.js'

interface ClientEvent {
  event_id: string
  type: string
  sender: string
  content: Record<string, unknown>
  unsigned: Record<string, unknown>
}
interface Bundled {
  'm.thread'?: { latest_event: ClientEvent; count: number; current_user_participated: boolean }
  'm.replace'?: ClientEvent
  'm.reference'?: { chunk: { event_id: string }[] }
}
const v1 = '/_matrix/client/v1'

describe('api event relations (/relations, /threads, bundled aggregations)', function () {
  this.timeout(60_000)
  let h: ApiHarness
  let alice: Session
  let bob: Session
  let carol: Session
  let txn = 0
  before(async () => {
    h = await startApi({ roomRoutes: (services) => [roomReadRoutes(services), roomWriteRoutes(services), syncRoutes(services)] })
    ;[alice, bob, carol] = [await h.register('alice'), await h.register('bob'), await h.register('carol')]
  })
  after(() => h.close())

  const send = async (as: Session, roomId: string, content: Record<string, unknown>, type = 'm.room.message') => {
    const res = await h.call('PUT', `${v3}/rooms/${enc(roomId)}/send/${enc(type)}/t${++txn}`, { token: as.access_token, body: content })
    if (res.statusCode !== 200) throw new Error(`send: ${res.statusCode} ${res.body}`)
    return res.json<{ event_id: string }>().event_id
  }
  const text = (body: string, relatesTo?: Record<string, unknown>) => ({ msgtype: 'm.text', body, ...(relatesTo && { 'm.relates_to': relatesTo }) })
  const thread = (root: string) => ({ rel_type: 'm.thread', event_id: root })
  const get = async <T>(as: Session, url: string) => {
    const res = await h.call('GET', url, { token: as.access_token })
    if (res.statusCode !== 200) throw new Error(`GET ${url}: ${res.statusCode} ${res.body}`)
    return res.json<T>()
  }
  const relations = (as: Session, roomId: string, parent: string, rest = '', query = '') =>
    get<{ chunk: ClientEvent[]; next_batch?: string }>(as, `${v1}/rooms/${enc(roomId)}/relations/${enc(parent)}${rest}${query ? `?${query}` : ''}`)
  const bundled = async (as: Session, roomId: string, eventId: string) =>
    (await get<ClientEvent>(as, `${v3}/rooms/${enc(roomId)}/event/${enc(eventId)}`)).unsigned['m.relations'] as Bundled | undefined

  it('should serve the events relating to one, by relation and event type, page by page, to those who may see the parent', async () => {
    const roomId = await createSharedRoom(h, alice, bob)
    const root = await send(alice, roomId, text('root'))
    const replies = [await send(bob, roomId, text('r1', thread(root))), await send(alice, roomId, text('r2', thread(root))), await send(bob, roomId, text('r3', thread(root)))]
    const reaction = await send(bob, roomId, { 'm.relates_to': { rel_type: 'm.annotation', event_id: root, key: '👍' } }, 'm.reaction')
    await send(alice, roomId, text('unrelated'))

    const all = await relations(alice, roomId, root)
    expect(all.chunk.map((e) => e.event_id)).to.deep.equal([...replies, reaction].reverse())
    expect((await relations(alice, roomId, root, '/m.thread')).chunk.map((e) => e.event_id)).to.deep.equal([...replies].reverse())
    expect((await relations(alice, roomId, root, '/m.annotation/m.reaction')).chunk.map((e) => e.event_id)).to.deep.equal([reaction])
    expect((await relations(alice, roomId, root, '/m.annotation/m.room.message')).chunk).to.deep.equal([])
    expect((await relations(alice, roomId, root, '/m.thread', 'dir=f')).chunk.map((e) => e.event_id)).to.deep.equal(replies)

    // Any page size: the pages add up to every related event once, in order.
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 5 }), fc.constantFrom<'b' | 'f'>('b', 'f'), async (limit, dir) => {
        const seen: string[] = []
        let from: string | undefined
        for (let pages = 0; pages < 10; pages++) {
          const page = await relations(bob, roomId, root, '', `limit=${limit}&dir=${dir}${from ? `&from=${enc(from)}` : ''}`)
          expect(page.chunk.length).to.be.at.most(limit)
          seen.push(...page.chunk.map((e) => e.event_id))
          if (page.next_batch === undefined) break
          from = page.next_batch
        }
        const expected = [...replies, reaction]
        expect(seen).to.deep.equal(dir === 'b' ? [...expected].reverse() : expected)
      }),
      { numRuns: 10 },
    )

    const outsider = await h.call('GET', `${v1}/rooms/${enc(roomId)}/relations/${enc(root)}`, { token: carol.access_token })
    expect([outsider.statusCode, outsider.json().errcode]).to.deep.equal([403, 'M_FORBIDDEN'])
    const unknown = await h.call('GET', `${v1}/rooms/${enc(roomId)}/relations/${enc('$nosuch')}`, { token: alice.access_token })
    expect([unknown.statusCode, unknown.json().errcode]).to.deep.equal([404, 'M_NOT_FOUND'])
    const badDir = await h.call('GET', `${v1}/rooms/${enc(roomId)}/relations/${enc(root)}?dir=x`, { token: alice.access_token })
    expect([badDir.statusCode, badDir.json().errcode]).to.deep.equal([400, 'M_INVALID_PARAM'])
  })

  it('should bundle the thread summary, the latest edit by the sender and references into served events, and forget redacted relations', async () => {
    const roomId = await createSharedRoom(h, alice, bob)
    const root = await send(alice, roomId, text('original'))
    const r1 = await send(bob, roomId, text('reply 1', thread(root)))
    const r2 = await send(bob, roomId, text('reply 2', thread(root)))
    await send(alice, roomId, { ...text('* edited'), 'm.new_content': text('edited'), 'm.relates_to': { rel_type: 'm.replace', event_id: root } })
    const edit2 = await send(alice, roomId, { ...text('* edited again'), 'm.new_content': text('edited again'), 'm.relates_to': { rel_type: 'm.replace', event_id: root } })
    // An edit by someone else is no edit (the spec: replacements must come from the sender).
    await send(bob, roomId, { ...text('* hijack'), 'm.new_content': text('hijack'), 'm.relates_to': { rel_type: 'm.replace', event_id: root } })
    const ref = await send(bob, roomId, text('see above', { rel_type: 'm.reference', event_id: root }))

    const seenByAlice = await bundled(alice, roomId, root)
    expect(seenByAlice?.['m.thread']).to.deep.include({ count: 2, current_user_participated: true })
    expect(seenByAlice?.['m.thread']?.latest_event).to.deep.include({ event_id: r2, sender: bob.user_id, content: text('reply 2', thread(root)) })
    expect(seenByAlice?.['m.replace']?.event_id).to.equal(edit2)
    expect(seenByAlice?.['m.reference']).to.deep.equal({ chunk: [{ event_id: ref }] })
    const seenByCarolLater = await bundled(bob, roomId, r1)
    expect(seenByCarolLater, 'a reply has no relations of its own').to.equal(undefined)

    // The same in a sync timeline and in /messages.
    const sync = await syncAs<{ rooms: { join: Record<string, { timeline: { events: ClientEvent[] } }> } }>(h, alice, {
      filter: JSON.stringify({ room: { rooms: [roomId], timeline: { limit: 50 } } }),
    })
    const inSync = sync.rooms.join[roomId]!.timeline.events.find((e) => e.event_id === root)
    expect((inSync?.unsigned['m.relations'] as Bundled)['m.thread']?.count).to.equal(2)
    const messages = await get<{ chunk: ClientEvent[] }>(alice, `${v3}/rooms/${enc(roomId)}/messages?dir=b&limit=50`)
    expect((messages.chunk.find((e) => e.event_id === root)?.unsigned['m.relations'] as Bundled)['m.replace']?.event_id).to.equal(edit2)

    // A redacted reply no longer counts; the latest is the one before.
    const redacted = await h.call('PUT', `${v3}/rooms/${enc(roomId)}/redact/${enc(r2)}/t${++txn}`, { token: bob.access_token, body: {} })
    expect(redacted.statusCode).to.equal(200)
    const afterRedaction = await bundled(alice, roomId, root)
    expect(afterRedaction?.['m.thread']).to.deep.include({ count: 1 })
    expect(afterRedaction?.['m.thread']?.latest_event.event_id).to.equal(r1)
    expect((await relations(alice, roomId, root, '/m.thread')).chunk.map((e) => e.event_id)).to.deep.equal([r1])
  })

  it('should list threads by latest activity, those one took part in, page by page', async () => {
    const roomId = await createSharedRoom(h, alice, bob, carol)
    const first = await send(alice, roomId, text('first'))
    const second = await send(alice, roomId, text('second'))
    await send(alice, roomId, text('a', thread(first)))
    await send(bob, roomId, text('b', thread(second)))
    await send(alice, roomId, text('c', thread(first)))
    await send(alice, roomId, text('no thread'))
    const threads = (as: Session, query = '') => get<{ chunk: ClientEvent[]; next_batch?: string }>(as, `${v1}/rooms/${enc(roomId)}/threads${query ? `?${query}` : ''}`)

    const all = await threads(carol)
    expect(all.chunk.map((e) => e.event_id)).to.deep.equal([first, second])
    expect((all.chunk[0]!.unsigned['m.relations'] as Bundled)['m.thread']).to.deep.include({ count: 2, current_user_participated: false })
    expect((await threads(bob, 'include=participated')).chunk.map((e) => e.event_id)).to.deep.equal([second])
    expect((await threads(carol, 'include=participated')).chunk).to.deep.equal([])
    const page1 = await threads(carol, 'limit=1')
    expect(page1.chunk.map((e) => e.event_id)).to.deep.equal([first])
    const page2 = await threads(carol, `limit=1&from=${page1.next_batch}`)
    expect([page2.chunk.map((e) => e.event_id), page2.next_batch]).to.deep.equal([[second], undefined])

    const stranger = await h.register('dave')
    const refused = await h.call('GET', `${v1}/rooms/${enc(roomId)}/threads`, { token: stranger.access_token })
    expect([refused.statusCode, refused.json().errcode]).to.deep.equal([403, 'M_FORBIDDEN'])
  })

  it("should find, in migration 0015's fill of the events stored before it, the same relations the persister records", async () => {
    const recorded = await h.t.db.selectFrom('event_relations').selectAll().orderBy('event_id').execute()
    expect(recorded.length, 'the earlier tests stored relations').to.be.above(10)
    const migration = await readFile(new URL('../../../migrations/0015-event-relations.sql', import.meta.url), 'utf8')
    const fill = migration.slice(migration.indexOf('INSERT INTO event_relations'))
    await h.t.db.deleteFrom('event_relations').execute()
    await sql.raw(fill).execute(h.t.db)
    expect(await h.t.db.selectFrom('event_relations').selectAll().orderBy('event_id').execute()).to.deep.equal(recorded)
  })
})
