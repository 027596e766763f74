import { expect } from 'chai'
import fc from 'fast-check'
import { redactedView, redactEvent, redactionKeptTopLevelKeys } from '../../../../storage/events/redaction.js'
import type { JsonObject } from '../../../../storage/events/redaction.js'

const base = {
  room_id: '!r:example.org',
  sender: '@alice:example.org',
  origin_server_ts: 1_700_000_000_000,
  depth: 7,
  prev_events: ['$prev'],
  auth_events: ['$create', '$pl'],
  hashes: { sha256: 'abc' },
  signatures: { 'example.org': { 'ed25519:a_1': 'sig' } },
}

function withContent(type: string, content: JsonObject, extra: JsonObject = {}): JsonObject {
  return { ...base, type, content, ...extra }
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const child of Object.values(value)) deepFreeze(child)
    Object.freeze(value)
  }
  return value
}

describe('redactEvent', () => {
  it('should keep exactly the v11 top-level keys and drop unsigned, origin, membership, prev_state and top-level redacts', () => {
    const event = withContent('m.room.message', { body: 'hi' }, {
      event_id: '$e',
      state_key: '',
      unsigned: { age: 5 },
      origin: 'example.org',
      membership: 'join',
      prev_state: [],
      redacts: '$target',
      age_ts: 3,
      custom: true,
    })
    const redacted = redactEvent(event)
    expect(Object.keys(redacted).sort()).to.deep.equal([...redactionKeptTopLevelKeys].sort())
    expect(redacted['depth']).to.equal(7)
    expect(redacted['prev_events']).to.deep.equal(['$prev'])
    expect(redacted['signatures']).to.deep.equal(base.signatures)
    expect(redacted['content']).to.deep.equal({})
  })

  const contentCases: { type: string; content: JsonObject; kept: JsonObject }[] = [
    {
      type: 'm.room.member',
      content: { membership: 'join', join_authorised_via_users_server: '@mod:x', displayname: 'A', avatar_url: 'mxc://x/y', reason: 'r' },
      kept: { membership: 'join', join_authorised_via_users_server: '@mod:x' },
    },
    {
      type: 'm.room.create',
      content: { room_version: '11', 'm.federate': false, predecessor: { room_id: '!old:x' }, anything: [1, 2] },
      kept: { room_version: '11', 'm.federate': false, predecessor: { room_id: '!old:x' }, anything: [1, 2] },
    },
    {
      type: 'm.room.join_rules',
      content: { join_rule: 'restricted', allow: [{ type: 'm.room_membership', room_id: '!s:x' }], note: 'x' },
      kept: { join_rule: 'restricted', allow: [{ type: 'm.room_membership', room_id: '!s:x' }] },
    },
    {
      type: 'm.room.power_levels',
      content: {
        ban: 50, events: { 'm.room.name': 50 }, events_default: 0, invite: 0, kick: 50, redact: 50, state_default: 50,
        users: { '@a:x': 100 }, users_default: 0, notifications: { room: 50 }, historical: 100,
      },
      kept: {
        ban: 50, events: { 'm.room.name': 50 }, events_default: 0, invite: 0, kick: 50, redact: 50, state_default: 50,
        users: { '@a:x': 100 }, users_default: 0,
      },
    },
    {
      type: 'm.room.history_visibility',
      content: { history_visibility: 'shared', extra: 1 },
      kept: { history_visibility: 'shared' },
    },
    { type: 'm.room.redaction', content: { redacts: '$t', reason: 'spam' }, kept: { redacts: '$t' } },
    { type: 'm.room.message', content: { msgtype: 'm.text', body: 'secret' }, kept: {} },
    { type: 'm.room.name', content: { name: 'Secret plans' }, kept: {} },
    { type: 'm.room.aliases', content: { aliases: ['#a:x'] }, kept: {} },
  ]
  for (const { type, content, kept } of contentCases) {
    it(`should keep ${JSON.stringify(Object.keys(kept))} of ${type} content`, () => {
      expect(redactEvent(withContent(type, content))['content']).to.deep.equal(kept)
    })
  }

  describe('m.room.member third_party_invite', () => {
    it('should keep only its signed key', () => {
      const content = {
        membership: 'invite',
        third_party_invite: { display_name: 'bob@example.com', signed: { mxid: '@b:x', token: 't', signatures: {} } },
      }
      expect(redactEvent(withContent('m.room.member', content))['content']).to.deep.equal({
        membership: 'invite',
        third_party_invite: { signed: { mxid: '@b:x', token: 't', signatures: {} } },
      })
    })

    it('should keep an empty object when there is no signed key', () => {
      const content = { membership: 'invite', third_party_invite: { display_name: 'x' } }
      expect(redactEvent(withContent('m.room.member', content))['content']).to.deep.equal({ membership: 'invite', third_party_invite: {} })
    })

    it('should drop it when it is not an object', () => {
      const content = { membership: 'invite', third_party_invite: 'nope' }
      expect(redactEvent(withContent('m.room.member', content))['content']).to.deep.equal({ membership: 'invite' })
    })

    it('should not keep it on other event types', () => {
      const content = { third_party_invite: { signed: {} } }
      expect(redactEvent(withContent('m.room.message', content))['content']).to.deep.equal({})
    })
  })

  it('should give an empty content object when content is missing or not an object', () => {
    expect(redactEvent({ ...base, type: 'm.room.create' })['content']).to.deep.equal({})
    expect(redactEvent({ ...base, type: 'm.room.create', content: [1] })['content']).to.deep.equal({})
    expect(redactEvent({ ...base, type: 'm.room.member', content: 'join' })['content']).to.deep.equal({})
  })

  it('should keep an own __proto__ key of m.room.create content as data', () => {
    const content = JSON.parse('{"__proto__":{"polluted":true},"room_version":"11"}') as JsonObject
    const redacted = redactEvent(withContent('m.room.create', content))['content'] as JsonObject
    expect(Object.getPrototypeOf(redacted)).to.equal(Object.prototype)
    expect(Object.keys(redacted).sort()).to.deep.equal(['__proto__', 'room_version'])
    expect(Object.getOwnPropertyDescriptor(redacted, '__proto__')?.value).to.deep.equal({ polluted: true })
  })

  it('should not mutate its input', () => {
    const event = deepFreeze(withContent('m.room.member', { membership: 'join', displayname: 'A' }, { unsigned: { age: 1 } }))
    const copy = structuredClone(event)
    redactEvent(event)
    expect(event).to.deep.equal(copy)
  })

  it('should share no objects with its input', () => {
    const event = withContent('m.room.power_levels', { users: { '@a:x': 100 } })
    const redacted = redactEvent(event)
    ;((redacted['content'] as JsonObject)['users'] as JsonObject)['@a:x'] = 0
    ;(redacted['prev_events'] as string[]).push('$other')
    ;((redacted['signatures'] as JsonObject)['example.org'] as JsonObject)['ed25519:a_1'] = 'changed'
    expect(event['content']).to.deep.equal({ users: { '@a:x': 100 } })
    expect(event['prev_events']).to.deep.equal(['$prev'])
    expect(event['signatures']).to.deep.equal(base.signatures)
  })

  const eventArb = fc.record(
    {
      type: fc.constantFrom('m.room.member', 'm.room.create', 'm.room.join_rules', 'm.room.power_levels', 'm.room.message', 'x.custom'),
      sender: fc.constant('@a:x'),
      content: fc.dictionary(
        fc.constantFrom('membership', 'body', 'join_rule', 'users', 'ban', 'third_party_invite', 'room_version', 'displayname'),
        fc.oneof(fc.string(), fc.integer(), fc.dictionary(fc.constantFrom('signed', 'token', 'x'), fc.string())),
      ),
      unsigned: fc.dictionary(fc.string(), fc.integer()),
      origin: fc.string(),
      depth: fc.nat(),
      state_key: fc.string(),
    },
    { requiredKeys: ['type', 'sender', 'content'] },
  )

  it('should be idempotent (property)', () => {
    fc.assert(
      fc.property(eventArb, (event) => {
        const once = redactEvent(event)
        expect(redactEvent(once)).to.deep.equal(once)
      }),
    )
  })

  it('should only ever keep keys and content keys the event already had (property)', () => {
    fc.assert(
      fc.property(eventArb, (event) => {
        const redacted = redactEvent(event)
        for (const key of Object.keys(redacted)) {
          if (key !== 'content') expect(redacted[key]).to.deep.equal((event as JsonObject)[key])
        }
        const content = redacted['content'] as JsonObject
        for (const key of Object.keys(content)) {
          expect(event.content).to.have.property(key)
          if (key !== 'third_party_invite') expect(content[key]).to.deep.equal(event.content[key])
        }
      }),
    )
  })

  it('redactedView should keep exactly what redactEvent keeps, sharing values instead of copying (property)', () => {
    fc.assert(
      fc.property(eventArb, (event) => {
        const view = redactedView(event)
        expect(view).to.deep.equal(redactEvent(event))
        for (const key of Object.keys(view)) {
          if (key !== 'content') expect(view[key]).to.equal((event as JsonObject)[key])
        }
      }),
    )
  })
})
