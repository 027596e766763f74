import { expect } from 'chai'
import { MatrixError } from '../../../api/errors.js'
import { planRoomCreation, type CreateRoomBody } from '../../../api/room-creation.js'
import { generateRoomId, isRoomAlias, isRoomId, isUserId } from '../../../api/room-ids.js'

const server = 'example.org'
const roomId = '!room:example.org'
const alice = '@alice:example.org'
const bob = '@bob:example.org'

function plan(body: CreateRoomBody, profile = {}) {
  return planRoomCreation(roomId, alice, server, body, profile)
}

function refusal(body: CreateRoomBody): [number, string, string] {
  try {
    plan(body)
  } catch (err) {
    expect(err).to.be.instanceOf(MatrixError)
    const e = err as MatrixError
    return [e.status, e.errcode, e.message]
  }
  throw new Error('expected a refusal')
}

const keyed = (events: ReturnType<typeof plan>['events']) => events.map((e) => `${e.type}|${e.state_key ?? ''}`)

describe('planRoomCreation', () => {
  it('should order a full request as the spec does', () => {
    const { events, alias, published, invitees } = plan(
      {
        visibility: 'public',
        room_alias_name: 'lobby',
        name: 'Lobby',
        topic: 'Chat',
        invite: [bob, bob],
        initial_state: [{ type: 'org.example', state_key: 's', content: { a: 1 } }],
      },
      { displayname: 'Alice', avatar_url: null },
    )
    expect(keyed(events)).to.deep.equal([
      'm.room.create|',
      `m.room.member|${alice}`,
      'm.room.power_levels|',
      'm.room.canonical_alias|',
      'm.room.join_rules|',
      'm.room.history_visibility|',
      'org.example|s',
      'm.room.name|',
      'm.room.topic|',
      `m.room.member|${bob}`,
    ])
    expect(events.every((e) => e.sender === alice)).to.equal(true)
    expect(events[1]?.content).to.deep.equal({ membership: 'join', displayname: 'Alice' })
    expect(events[3]?.content).to.deep.equal({ alias: '#lobby:example.org' })
    expect([alias, published, invitees]).to.deep.equal(['#lobby:example.org', true, [bob]])
  })

  it('should apply the presets', () => {
    const table = [
      { body: {}, joinRule: 'invite', guest: true, invite: 0, bobLevel: undefined },
      { body: { visibility: 'public' }, joinRule: 'public', guest: false, invite: 50, bobLevel: undefined },
      { body: { preset: 'public_chat', visibility: 'private' }, joinRule: 'public', guest: false, invite: 50, bobLevel: undefined },
      { body: { preset: 'private_chat', visibility: 'public' }, joinRule: 'invite', guest: true, invite: 0, bobLevel: undefined },
      { body: { preset: 'trusted_private_chat' }, joinRule: 'invite', guest: true, invite: 0, bobLevel: 100 },
    ] as const
    for (const row of table) {
      const { events } = plan({ ...row.body, invite: [bob] })
      const content = (type: string) => events.find((e) => e.type === type && e.state_key === '')?.content
      const what = JSON.stringify(row.body)
      expect(content('m.room.join_rules'), what).to.deep.equal({ join_rule: row.joinRule })
      expect(content('m.room.history_visibility'), what).to.deep.equal({ history_visibility: 'shared' })
      expect(content('m.room.guest_access'), what).to.deep.equal(row.guest ? { guest_access: 'can_join' } : undefined)
      const levels = content('m.room.power_levels') as { invite: number; users: Record<string, number> }
      expect(levels.invite, what).to.equal(row.invite)
      expect(levels.users[bob], what).to.equal(row.bobLevel)
      expect(levels.users[alice], what).to.equal(100)
    }
  })

  it('should apply power_level_content_override shallowly, after the preset', () => {
    const { events } = plan({ preset: 'private_chat', power_level_content_override: { invite: 20, events: { 'm.room.name': 0 } } })
    const levels = events.find((e) => e.type === 'm.room.power_levels')?.content
    expect(levels).to.deep.include({ invite: 20, events: { 'm.room.name': 0 }, ban: 50, state_default: 50 })
  })

  it('should let initial_state replace preset events and power levels, the last entry winning', () => {
    const { events } = plan({
      preset: 'public_chat',
      power_level_content_override: { ban: 1 },
      initial_state: [
        { type: 'm.room.join_rules', content: { join_rule: 'invite' } },
        { type: 'm.room.power_levels', content: { users: { [alice]: 100 } } },
        { type: 'm.room.join_rules', state_key: '', content: { join_rule: 'knock' } },
      ],
    })
    expect(keyed(events)).to.deep.equal(['m.room.create|', `m.room.member|${alice}`, 'm.room.power_levels|', 'm.room.history_visibility|', 'm.room.join_rules|'])
    expect(events[2]?.content).to.deep.equal({ users: { [alice]: 100 } })
    expect(events[4]?.content).to.deep.equal({ join_rule: 'knock' })
  })

  it('should force the room version into creation_content and mark direct invites', () => {
    const { events } = plan({ creation_content: { room_version: '1', type: 'm.space' }, invite: [bob], is_direct: true })
    expect(events[0]?.content).to.deep.equal({ room_version: '11', type: 'm.space' })
    expect(events.at(-1)?.content).to.deep.equal({ membership: 'invite', is_direct: true })
    expect(plan({ invite: [bob], is_direct: false }).events.at(-1)?.content).to.deep.equal({ membership: 'invite' })
  })

  it('should refuse what cannot work', () => {
    const table: [CreateRoomBody, number, string, RegExp][] = [
      [{ room_version: '10' }, 400, 'M_UNSUPPORTED_ROOM_VERSION', /"10"/],
      [{ room_alias_name: '#a:example.org' }, 400, 'M_INVALID_PARAM', /local part/],
      [{ room_alias_name: 'a\tb' }, 400, 'M_INVALID_PARAM', /whitespace/],
      [{ room_alias_name: 'a'.repeat(250) }, 400, 'M_INVALID_PARAM', /longer than 255/],
      [{ invite: ['bob'] }, 400, 'M_INVALID_PARAM', /Invalid user_id/],
      [{ invite: ['@bob:other.org'] }, 403, 'M_FORBIDDEN', /federation/],
      [{ power_level_content_override: { users: { [bob]: 100 } } }, 400, 'M_INVALID_ROOM_STATE', /creator/],
      [{ power_level_content_override: { users: { [alice]: 0 } } }, 400, 'M_INVALID_ROOM_STATE', /m\.room\.join_rules: sender's power level 0/],
      [{ initial_state: [{ type: 'm.room.create', content: {} }] }, 400, 'M_INVALID_ROOM_STATE', /m\.room\.create/],
      [{ initial_state: [{ type: 'x', state_key: bob, content: {} }] }, 400, 'M_INVALID_ROOM_STATE', /starts with @/],
      [{ invite: [alice] }, 400, 'M_INVALID_ROOM_STATE', /already joined/],
    ]
    for (const [body, status, errcode, message] of table) {
      const [s, e, m] = refusal(body)
      expect([s, e], JSON.stringify(body)).to.deep.equal([status, errcode])
      expect(m).to.match(message)
    }
  })
})

describe('room identifiers', () => {
  it('should tell valid IDs and aliases from invalid ones', () => {
    expect(['@a:hs', '@a.b=c/d:hs.test:8448', '@a:[::1]:80', '@ü:hs'].map(isUserId)).to.deep.equal([true, true, true, true])
    expect(['a:hs', '@:hs', '@a', '@a:', '@a:b:c', '@a b:hs', `@${'a'.repeat(255)}:hs`].map(isUserId)).to.deep.equal(Array(7).fill(false))
    expect(['!r:hs', '!r:hs.test:8448', '#r:hs'].map(isRoomId)).to.deep.equal([true, true, false])
    expect(['#r:hs', '##r:hs', '!r:hs', '#:hs'].map(isRoomAlias)).to.deep.equal([true, true, false, false])
  })

  it('should generate distinct room IDs of 18 random characters', () => {
    const ids = Array.from({ length: 50 }, () => generateRoomId('example.org'))
    expect(new Set(ids).size).to.equal(50)
    for (const id of ids) expect(id).to.match(/^![A-Za-z0-9_-]{18}:example\.org$/)
    expect(ids.every(isRoomId)).to.equal(true)
  })
})
