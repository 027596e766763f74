import { expect } from 'chai'
import { accountDataChanges, accountDataPosition } from '../../../storage/account-data.js'
import { startApi, v3, type ApiHarness, type Session } from './api-harness.js'
import { countingQueries } from '../../support/db.js'

describe('api start-up endpoints (account data, filters, push rules, profile)', function () {
  this.timeout(60_000)
  let h: ApiHarness
  let alice: Session
  let bob: Session
  before(async () => {
    h = await startApi()
    alice = await h.register('alice')
    bob = await h.register('bob')
  })
  after(() => h.close())

  const room = '!room1:hs.test'
  const enc = encodeURIComponent

  describe('account data', () => {
    it('should store global account data, answer 404 M_NOT_FOUND before, and advance the stream on every write', async () => {
      const url = `${v3}/user/${enc(alice.user_id)}/account_data/m.direct`
      const before = await h.call('GET', url, { token: alice.access_token })
      expect([before.statusCode, before.json().errcode]).to.deep.equal([404, 'M_NOT_FOUND'])
      const p0 = await accountDataPosition(h.t.db)
      expect((await h.call('PUT', url, { token: alice.access_token, body: { '@bob:hs.test': ['!a:hs.test'] } })).json()).to.deep.equal({})
      const p1 = await accountDataPosition(h.t.db)
      expect(p1 > p0).to.equal(true)
      expect((await h.call('GET', url, { token: alice.access_token })).json()).to.deep.equal({ '@bob:hs.test': ['!a:hs.test'] })
      await h.call('PUT', url, { token: alice.access_token, body: { replaced: true } })
      expect((await accountDataPosition(h.t.db)) > p1).to.equal(true)
      expect((await h.call('GET', url, { token: alice.access_token })).json()).to.deep.equal({ replaced: true })
      const changes = await accountDataChanges(h.t.db, alice.user_id, { after: p1, upTo: await accountDataPosition(h.t.db) })
      expect(changes.global).to.deep.equal([{ type: 'm.direct', content: { replaced: true } }])
      expect(await accountDataChanges(h.t.db, bob.user_id, { upTo: await accountDataPosition(h.t.db) })).to.deep.equal({ global: [], rooms: new Map() })
    })

    it('should answer an empty range without reading, and a range holding a change with it', async () => {
      await h.call('PUT', `${v3}/user/${enc(alice.user_id)}/account_data/m.test.range`, { token: alice.access_token, body: { n: 1 } })
      const position = await accountDataPosition(h.t.db)
      const counted = countingQueries(h.t.db)
      expect(await accountDataChanges(counted.db, alice.user_id, { after: position, upTo: position })).to.deep.equal({ global: [], rooms: new Map() })
      expect(counted.queries, 'queries for an empty range').to.equal(0)
      const changes = await accountDataChanges(counted.db, alice.user_id, { after: position - 1n, upTo: position })
      expect(changes.global).to.deep.equal([{ type: 'm.test.range', content: { n: 1 } }])
      expect(counted.queries, 'queries for a range holding a change').to.be.greaterThan(0)
    })

    it('should keep per-room account data separate per room and from global data', async () => {
      const roomUrl = (r: string) => `${v3}/user/${enc(alice.user_id)}/rooms/${enc(r)}/account_data/m.tag`
      await h.call('PUT', roomUrl(room), { token: alice.access_token, body: { tags: { u: {} } } })
      expect((await h.call('GET', roomUrl(room), { token: alice.access_token })).json()).to.deep.equal({ tags: { u: {} } })
      expect((await h.call('GET', roomUrl('!other:hs.test'), { token: alice.access_token })).statusCode).to.equal(404)
      expect((await h.call('GET', `${v3}/user/${enc(alice.user_id)}/account_data/m.tag`, { token: alice.access_token })).statusCode).to.equal(404)
      const r0 = await h.call('GET', `/_matrix/client/r0/user/${enc(alice.user_id)}/rooms/${enc(room)}/account_data/m.tag`, { token: alice.access_token })
      expect(r0.json()).to.deep.equal({ tags: { u: {} } })
      const changes = await accountDataChanges(h.t.db, alice.user_id, { upTo: await accountDataPosition(h.t.db) })
      expect(changes.rooms.get(room)).to.deep.equal([{ type: 'm.tag', content: { tags: { u: {} } } }])
    })

    it("should refuse another user's account data with 403 and bad input with 400", async () => {
      for (const method of ['GET', 'PUT'] as const) {
        const res = await h.call(method, `${v3}/user/${enc(alice.user_id)}/account_data/m.direct`, { token: bob.access_token, body: method === 'PUT' ? {} : undefined })
        expect([res.statusCode, res.json().errcode]).to.deep.equal([403, 'M_FORBIDDEN'])
      }
      const notObject = await h.call('PUT', `${v3}/user/${enc(alice.user_id)}/account_data/x.y`, { token: alice.access_token, body: [1] })
      expect([notObject.statusCode, notObject.json().errcode]).to.deep.equal([400, 'M_BAD_JSON'])
      const badRoom = await h.call('PUT', `${v3}/user/${enc(alice.user_id)}/rooms/not-a-room/account_data/x.y`, { token: alice.access_token, body: {} })
      expect([badRoom.statusCode, badRoom.json().errcode]).to.deep.equal([400, 'M_INVALID_PARAM'])
      const fullyRead = await h.call('PUT', `${v3}/user/${enc(alice.user_id)}/rooms/${enc(room)}/account_data/m.fully_read`, { token: alice.access_token, body: { event_id: '$e' } })
      expect([fullyRead.statusCode, fullyRead.json().errcode]).to.deep.equal([405, 'M_BAD_JSON'])
      const pushRules = await h.call('PUT', `${v3}/user/${enc(alice.user_id)}/account_data/m.push_rules`, { token: alice.access_token, body: {} })
      expect(pushRules.statusCode).to.equal(405)
    })
  })

  describe('room tags', () => {
    // A room of its own: the account data tests above tag `room` through the generic route.
    const tagRoom = '!tags:hs.test'
    const tagsUrl = (user: Session, roomId = tagRoom) => `${v3}/user/${enc(user.user_id)}/rooms/${enc(roomId)}/tags`
    const tags = async (user: Session) => (await h.call('GET', tagsUrl(user), { token: user.access_token })).json<{ tags: Record<string, unknown> }>().tags

    it('should keep every tag of concurrent changes, show them as m.tag room account data, and delete one alone', async () => {
      expect(await tags(bob)).to.deep.equal({})
      const names = Array.from({ length: 10 }, (_, i) => `u.tag${i}`)
      const p0 = await accountDataPosition(h.t.db)
      const puts = await Promise.all(names.map((name, i) => h.call('PUT', `${tagsUrl(bob)}/${name}`, { token: bob.access_token, body: { order: i / 10 } })))
      expect(puts.map((r) => r.statusCode)).to.deep.equal(names.map(() => 200))
      const expected = Object.fromEntries(names.map((name, i) => [name, { order: i / 10 }]))
      expect(await tags(bob)).to.deep.equal(expected)
      const changes = await accountDataChanges(h.t.db, bob.user_id, { after: p0, upTo: await accountDataPosition(h.t.db) })
      expect(changes.rooms.get(tagRoom)).to.deep.equal([{ type: 'm.tag', content: { tags: expected } }])

      expect((await h.call('DELETE', `${tagsUrl(bob)}/u.tag3`, { token: bob.access_token })).statusCode).to.equal(200)
      const { 'u.tag3': _gone, ...rest } = expected
      expect(await tags(bob)).to.deep.equal(rest)
      // Deleting a tag that is not there changes nothing else.
      expect((await h.call('DELETE', `${tagsUrl(bob)}/m.favourite`, { token: bob.access_token })).statusCode).to.equal(200)
      expect(await tags(bob)).to.deep.equal(rest)
      expect(await tags(alice)).to.deep.equal({})
    })

    it('should refuse tags of others, of malformed rooms and with a bad order, with a Matrix error', async () => {
      const cases: [string, Promise<{ statusCode: number; json: () => { errcode?: string } }>, number, string][] = [
        ['another user', h.call('PUT', `${tagsUrl(bob)}/m.favourite`, { token: alice.access_token, body: {} }), 403, 'M_FORBIDDEN'],
        ['read another user', h.call('GET', tagsUrl(bob), { token: alice.access_token }), 403, 'M_FORBIDDEN'],
        ['not a room', h.call('PUT', `${tagsUrl(alice, 'room')}/m.favourite`, { token: alice.access_token, body: {} }), 400, 'M_INVALID_PARAM'],
        ['order above 1', h.call('PUT', `${tagsUrl(alice)}/m.favourite`, { token: alice.access_token, body: { order: 2 } }), 400, 'M_BAD_JSON'],
        ['order not a number', h.call('PUT', `${tagsUrl(alice)}/m.favourite`, { token: alice.access_token, body: { order: 'first' } }), 400, 'M_BAD_JSON'],
        ['no token', h.call('DELETE', `${tagsUrl(alice)}/m.favourite`), 401, 'M_MISSING_TOKEN'],
      ]
      for (const [what, call, status, errcode] of cases) {
        const res = await call
        expect([what, res.statusCode, res.json().errcode]).to.deep.equal([what, status, errcode])
      }
      expect(await tags(alice)).to.deep.equal({})
    })
  })

  describe('filters', () => {
    const filter = { room: { timeline: { limit: 20 }, state: { lazy_load_members: true } }, presence: { not_types: ['*'] } }

    it('should store a filter, return its ID as a string and read it back', async () => {
      const res = await h.call('POST', `${v3}/user/${enc(alice.user_id)}/filter`, { token: alice.access_token, body: filter })
      expect(res.statusCode).to.equal(200)
      const id = res.json().filter_id
      expect(id).to.be.a('string').that.matches(/^\d+$/)
      expect((await h.call('GET', `${v3}/user/${enc(alice.user_id)}/filter/${id}`, { token: alice.access_token })).json()).to.deep.equal(filter)
      const again = await h.call('POST', `/_matrix/client/r0/user/${enc(alice.user_id)}/filter`, { token: alice.access_token, body: filter })
      expect(again.json().filter_id).to.equal(id)
      const other = await h.call('POST', `${v3}/user/${enc(alice.user_id)}/filter`, { token: alice.access_token, body: { room: { timeline: { limit: 1 } } } })
      expect(other.json().filter_id).to.not.equal(id)
    })

    it("should answer 404 for unknown filters and 403 for another user's filters", async () => {
      for (const id of ['999', 'abc']) {
        const res = await h.call('GET', `${v3}/user/${enc(alice.user_id)}/filter/${id}`, { token: alice.access_token })
        expect([res.statusCode, res.json().errcode]).to.deep.equal([404, 'M_NOT_FOUND'])
      }
      const id = (await h.call('POST', `${v3}/user/${enc(alice.user_id)}/filter`, { token: alice.access_token, body: {} })).json().filter_id
      const read = await h.call('GET', `${v3}/user/${enc(alice.user_id)}/filter/${id}`, { token: bob.access_token })
      expect([read.statusCode, read.json().errcode]).to.deep.equal([403, 'M_FORBIDDEN'])
      const write = await h.call('POST', `${v3}/user/${enc(alice.user_id)}/filter`, { token: bob.access_token, body: {} })
      expect([write.statusCode, write.json().errcode]).to.deep.equal([403, 'M_FORBIDDEN'])
    })

    it('should refuse wrongly typed filter fields with M_BAD_JSON', async () => {
      const res = await h.call('POST', `${v3}/user/${enc(alice.user_id)}/filter`, { token: alice.access_token, body: { room: { timeline: { limit: 'ten' } } } })
      expect([res.statusCode, res.json().errcode]).to.deep.equal([400, 'M_BAD_JSON'])
      expect(res.json().error).to.include('limit')
    })

    it('should number concurrent uploads without collisions', async () => {
      const carol = await h.register('carol')
      const ids = await Promise.all(
        Array.from({ length: 8 }, (_, i) =>
          h.call('POST', `${v3}/user/${enc(carol.user_id)}/filter`, { token: carol.access_token, body: { room: { timeline: { limit: i } } } }).then((r) => r.json().filter_id),
        ),
      )
      expect(new Set(ids).size).to.equal(8)
      expect(ids.map(Number).sort((a, b) => a - b)).to.deep.equal([0, 1, 2, 3, 4, 5, 6, 7])
    })
  })

  describe('push rules', () => {
    it("should answer the spec's default rule set, stored on first read", async () => {
      const res = await h.call('GET', `${v3}/pushrules/`, { token: bob.access_token })
      expect(res.statusCode).to.equal(200)
      const { global } = res.json()
      expect(Object.keys(global).sort()).to.deep.equal(['content', 'override', 'room', 'sender', 'underride'])
      expect(global.override[0]).to.include({ rule_id: '.m.rule.master', enabled: false, default: true })
      expect(global.content[0]).to.include({ rule_id: '.m.rule.contains_user_name', pattern: 'bob' })
      const invite = global.override.find((r: { rule_id: string }) => r.rule_id === '.m.rule.invite_for_me')
      expect(invite.conditions).to.deep.include({ kind: 'event_match', key: 'state_key', pattern: '@bob:hs.test' })
      expect(global.underride.map((r: { rule_id: string }) => r.rule_id)).to.include('.m.rule.message')
      const stored = await h.t.db.selectFrom('push_rules').selectAll().where('user_id', '=', bob.user_id).executeTakeFirstOrThrow()
      expect(stored.rules).to.deep.equal({ global })
      expect((await h.call('GET', `${v3}/pushrules/global/`, { token: bob.access_token })).json()).to.deep.equal(global)
      expect((await h.call('GET', `${v3}/user/${enc(bob.user_id)}/account_data/m.push_rules`, { token: bob.access_token })).json()).to.deep.equal({ global })
    })

    it('should add, place, read, toggle, change and delete user rules', async () => {
      const base = `${v3}/pushrules/global`
      const t = { token: alice.access_token }
      expect((await h.call('PUT', `${base}/room/${enc(room)}`, { ...t, body: { actions: ['notify'] } })).statusCode).to.equal(200)
      expect((await h.call('PUT', `${base}/override/first`, { ...t, body: { actions: [], conditions: [{ kind: 'event_match', key: 'type', pattern: 'x' }] } })).statusCode).to.equal(200)
      expect((await h.call('PUT', `${base}/override/second?after=first`, { ...t, body: { actions: ['notify'] } })).statusCode).to.equal(200)
      expect((await h.call('PUT', `${base}/override/zeroth?before=first`, { ...t, body: { actions: ['notify'] } })).statusCode).to.equal(200)
      const override = (await h.call('GET', `${base}/`, t)).json().override.map((r: { rule_id: string }) => r.rule_id)
      expect(override.slice(0, 5)).to.deep.equal(['.m.rule.master', 'zeroth', 'first', 'second', '.m.rule.suppress_notices'])
      expect((await h.call('GET', `${base}/room/${enc(room)}`, t)).json()).to.deep.equal({ rule_id: room, default: false, enabled: true, actions: ['notify'] })
      expect((await h.call('PUT', `${base}/room/${enc(room)}/enabled`, { ...t, body: { enabled: false } })).statusCode).to.equal(200)
      expect((await h.call('GET', `${base}/room/${enc(room)}/enabled`, t)).json()).to.deep.equal({ enabled: false })
      expect((await h.call('PUT', `${base}/override/.m.rule.master/enabled`, { ...t, body: { enabled: true } })).statusCode).to.equal(200)
      expect((await h.call('GET', `${base}/override/.m.rule.master/enabled`, t)).json()).to.deep.equal({ enabled: true })
      const actions = ['notify', { set_tweak: 'sound', value: 'ping' }]
      expect((await h.call('PUT', `${base}/underride/.m.rule.message/actions`, { ...t, body: { actions } })).statusCode).to.equal(200)
      expect((await h.call('GET', `${base}/underride/.m.rule.message/actions`, t)).json()).to.deep.equal({ actions })
      expect((await h.call('DELETE', `${base}/override/first`, t)).statusCode).to.equal(200)
      const gone = await h.call('GET', `${base}/override/first`, t)
      expect([gone.statusCode, gone.json().errcode]).to.deep.equal([404, 'M_NOT_FOUND'])
      const r0 = await h.call('GET', `/_matrix/client/r0/pushrules/global/override/zeroth`, t)
      expect(r0.json().rule_id).to.equal('zeroth')
    })

    it('should refuse invalid edits without changing anything', async () => {
      const base = `${v3}/pushrules/global`
      const t = { token: alice.access_token }
      const before = (await h.call('GET', `${v3}/pushrules/`, t)).json()
      const cases: [string, string, unknown, number, string][] = [
        ['PUT', `${base}/override/.m.rule.mine`, { actions: [] }, 400, 'M_INVALID_PARAM'],
        ['PUT', `${base}/content/nopattern`, { actions: [] }, 400, 'M_INVALID_PARAM'],
        ['PUT', `${base}/override/x?before=.m.rule.suppress_notices`, { actions: [] }, 400, 'M_INVALID_PARAM'],
        ['PUT', `${base}/override/x?before=missing`, { actions: [] }, 404, 'M_NOT_FOUND'],
        ['PUT', `${base}/bogus/x`, { actions: [] }, 400, 'M_INVALID_PARAM'],
        ['PUT', `${v3}/pushrules/device/override/x`, { actions: [] }, 400, 'M_INVALID_PARAM'],
        ['PUT', `${base}/override/x`, { actions: 'notify' }, 400, 'M_BAD_JSON'],
        ['PUT', `${base}/override/x`, { actions: ['dance'] }, 400, 'M_BAD_JSON'],
        ['DELETE', `${base}/override/.m.rule.master`, undefined, 400, 'M_INVALID_PARAM'],
        ['DELETE', `${base}/override/never`, undefined, 404, 'M_NOT_FOUND'],
        ['PUT', `${base}/override/never/enabled`, { enabled: 'yes' }, 400, 'M_BAD_JSON'],
        ['PUT', `${base}/override/never/enabled`, { enabled: true }, 404, 'M_NOT_FOUND'],
        ['GET', `${base}/sender/never/actions`, undefined, 404, 'M_NOT_FOUND'],
      ]
      for (const [method, url, body, status, errcode] of cases) {
        const res = await h.call(method as 'PUT', url, { ...t, body })
        expect([res.statusCode, res.json().errcode], `${method} ${url}`).to.deep.equal([status, errcode])
      }
      expect((await h.call('GET', `${v3}/pushrules/`, t)).json()).to.deep.equal(before)
      expect((await h.call('GET', `${v3}/pushrules/`)).statusCode).to.equal(401)
    })
  })

  describe('profile', () => {
    it('should start with the localpart as display name and let the owner change it', async () => {
      const url = `${v3}/profile/${enc(alice.user_id)}`
      expect((await h.call('GET', url)).json()).to.deep.equal({ displayname: 'alice' })
      expect((await h.call('PUT', `${url}/displayname`, { token: alice.access_token, body: { displayname: 'Alice A.' } })).statusCode).to.equal(200)
      expect((await h.call('PUT', `${url}/avatar_url`, { token: alice.access_token, body: { avatar_url: 'mxc://hs.test/abc' } })).statusCode).to.equal(200)
      expect((await h.call('GET', url)).json()).to.deep.equal({ displayname: 'Alice A.', avatar_url: 'mxc://hs.test/abc' })
      expect((await h.call('GET', `${url}/displayname`)).json()).to.deep.equal({ displayname: 'Alice A.' })
      expect((await h.call('GET', `/_matrix/client/r0/profile/${enc(alice.user_id)}/avatar_url`)).json()).to.deep.equal({ avatar_url: 'mxc://hs.test/abc' })
      expect((await h.call('PUT', `${url}/avatar_url`, { token: alice.access_token, body: { avatar_url: null } })).statusCode).to.equal(200)
      expect((await h.call('GET', url)).json()).to.deep.equal({ displayname: 'Alice A.' })
    })

    it('should answer 404 for unknown users, 403 for changing another profile, 400 for bad values', async () => {
      const unknown = await h.call('GET', `${v3}/profile/${enc('@nobody:hs.test')}`)
      expect([unknown.statusCode, unknown.json().errcode]).to.deep.equal([404, 'M_NOT_FOUND'])
      const other = await h.call('PUT', `${v3}/profile/${enc(alice.user_id)}/displayname`, { token: bob.access_token, body: { displayname: 'hacked' } })
      expect([other.statusCode, other.json().errcode]).to.deep.equal([403, 'M_FORBIDDEN'])
      const long = await h.call('PUT', `${v3}/profile/${enc(bob.user_id)}/displayname`, { token: bob.access_token, body: { displayname: 'x'.repeat(300) } })
      expect([long.statusCode, long.json().errcode]).to.deep.equal([400, 'M_BAD_JSON'])
      const anonymous = await h.call('PUT', `${v3}/profile/${enc(bob.user_id)}/displayname`, { body: { displayname: 'x' } })
      expect(anonymous.statusCode).to.equal(401)
    })
  })
})
