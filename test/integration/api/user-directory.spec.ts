import { expect } from 'chai'
import type { ApiHarness, Session } from './api-harness.js'
import { v3 } from './api-harness.js'
import { createRoom, enc, membership, sendEvents, startReadApi } from './read-fixtures.js'

interface SearchBody {
  results: { user_id: string; display_name?: string; avatar_url?: string }[]
  limited: boolean
}

describe('api user directory search', function () {
  this.timeout(60_000)
  let h: ApiHarness
  const users: Record<string, Session> = {}
  before(async () => {
    h = await startReadApi()
    for (const name of ['alice', 'bob', 'carol', 'dave', 'erin', 'frank', 'member1', 'member2', 'member3']) users[name] = await h.register(name)
    const id = (name: string) => users[name]!.user_id
    // alice and bob share a private room; carol, erin and the members are in a public one;
    // dave is alone in a private room; frank left the room he shared with alice.
    const shared = await createRoom(h, id('alice'))
    await sendEvents(h, shared, membership(id('alice'), id('bob'), 'invite'), membership(id('bob'), id('bob'), 'join'))
    const open = await createRoom(h, id('carol'), { joinRule: 'public' })
    for (const name of ['erin', 'member1', 'member2', 'member3']) await sendEvents(h, open, membership(id(name), id(name), 'join'))
    await createRoom(h, id('dave'))
    const left = await createRoom(h, id('alice'), { joinRule: 'public' })
    await sendEvents(h, left, membership(id('frank'), id('frank'), 'join'))
    await sendEvents(h, left, membership(id('frank'), id('frank'), 'leave'))
    await setName('bob', 'Robert Builder')
    await setName('erin', 'Erin 100%_sure')
    await h.call('PUT', `${v3}/profile/${enc(id('carol'))}/avatar_url`, { token: users['carol']!.access_token, body: { avatar_url: 'mxc://hs.test/carol' } })
  })
  after(() => h.close())

  async function setName(name: string, displayname: string): Promise<void> {
    const res = await h.call('PUT', `${v3}/profile/${enc(users[name]!.user_id)}/displayname`, { token: users[name]!.access_token, body: { displayname } })
    expect(res.statusCode).to.equal(200)
  }
  const search = async (term: string, limit?: number, as = 'alice'): Promise<SearchBody> => {
    const res = await h.call('POST', `${v3}/user_directory/search`, { token: users[as]!.access_token, body: { search_term: term, ...(limit !== undefined && { limit }) } })
    expect(res.statusCode, res.body).to.equal(200)
    return res.json<SearchBody>()
  }
  const found = async (term: string, limit?: number, as?: string) => (await search(term, limit, as)).results.map((r) => r.user_id.slice(1, r.user_id.indexOf(':')))

  it('should find the users one shares a room with and the members of public rooms, no one else', async () => {
    expect(await found('bob')).to.deep.equal(['bob'])
    expect(await found('carol')).to.deep.equal(['carol'])
    expect(await found('dave'), 'alone in a private room').to.deep.equal([])
    expect(await found('frank'), 'left the only room').to.deep.equal([])
    expect(await found('alice'), 'oneself').to.deep.equal(['alice'])
    expect(await found('bob', undefined, 'dave'), 'bob is in no room dave can see').to.deep.equal([])
    expect(await found('carol', undefined, 'dave')).to.deep.equal(['carol'])
  })

  it('should match every word in the user ID or display name, case-insensitively, names starting with the term first', async () => {
    expect(await found('BUILDER')).to.deep.equal(['bob'])
    expect(await found('rob build')).to.deep.equal(['bob'])
    expect(await found('robert zzz')).to.deep.equal([])
    expect(await found('  ')).to.deep.equal([])
    const body = await search('carol')
    expect(body.results).to.deep.equal([{ user_id: users['carol']!.user_id, display_name: 'carol', avatar_url: 'mxc://hs.test/carol' }])
    // "er" is in erin (a prefix), member1-3 and Robert Builder (inside).
    expect(await found('er')).to.deep.equal(['erin', 'bob', 'member1', 'member2', 'member3'])
  })

  it('should take % and _ literally', async () => {
    expect(await found('%')).to.deep.equal(['erin'])
    expect(await found('0%_s')).to.deep.equal(['erin'])
    expect(await found('_')).to.deep.equal(['erin'])
  })

  it('should answer at most limit users and say when there were more', async () => {
    expect(await search('member', 2)).to.deep.include({ limited: true })
    expect(await found('member', 2)).to.deep.equal(['member1', 'member2'])
    expect(await search('member', 3)).to.deep.include({ limited: false })
    expect(await search('member', 0)).to.deep.equal({ results: [], limited: true })
    expect((await found('e', 1000)).length).to.be.at.most(50)
  })

  it('should refuse malformed searches with a Matrix error', async () => {
    const token = users['alice']!.access_token
    const cases: [string, unknown, number, string][] = [
      ['no term', {}, 400, 'M_BAD_JSON'],
      ['term not a string', { search_term: 5 }, 400, 'M_BAD_JSON'],
      ['term too long', { search_term: 'x'.repeat(257) }, 400, 'M_BAD_JSON'],
      ['negative limit', { search_term: 'a', limit: -1 }, 400, 'M_BAD_JSON'],
      ['fractional limit', { search_term: 'a', limit: 1.5 }, 400, 'M_BAD_JSON'],
    ]
    for (const [name, body, status, errcode] of cases) {
      const res = await h.call('POST', `${v3}/user_directory/search`, { token, body })
      expect([name, res.statusCode, res.json().errcode]).to.deep.equal([name, status, errcode])
    }
    const anonymous = await h.call('POST', `${v3}/user_directory/search`, { body: { search_term: 'a' } })
    expect([anonymous.statusCode, anonymous.json().errcode]).to.deep.equal([401, 'M_MISSING_TOKEN'])
  })
})
