import { expect } from 'chai'
import fc from 'fast-check'
import { defaultPushRules, type PushCondition, type PushRule, type PushRuleSet } from '../../../storage/default-push-rules.js'
import { evaluatePushRules, property, type PushContext, type PushEvent } from '../../../storage/push-evaluator.js'

const me = '@alice:hs.test'
const other = '@bob:hs.test'
const room = '!room:hs.test'
const ctx: PushContext = { userId: me, displayName: 'Alice Liddell', memberCount: 5, powerLevels: { users: { [other]: 50 }, users_default: 0 } }
const message = (content: Record<string, unknown>, extra: Record<string, unknown> = {}): PushEvent => ({
  type: 'm.room.message',
  room_id: room,
  sender: other,
  content: { msgtype: 'm.text', ...content },
  ...extra,
})
const rules = defaultPushRules(me)
const outcome = (event: PushEvent, context: Partial<PushContext> = {}, set: PushRuleSet = rules) => {
  const { notify, highlight } = evaluatePushRules(set, event, { ...ctx, ...context })
  return notify ? (highlight ? 'highlight' : 'notify') : 'silent'
}
/** `rules` with `rule` first among the user rules of its kind. */
const withRule = (kind: keyof PushRuleSet['global'], rule: Omit<PushRule, 'default' | 'enabled'> & { enabled?: boolean }): PushRuleSet => ({
  global: { ...rules.global, [kind]: [{ default: false, enabled: true, ...rule }, ...rules.global[kind]] },
})

describe('push rule evaluation', () => {
  it('should follow the default rules for the events a room holds', () => {
    const cases: [string, PushEvent, Partial<PushContext>, string][] = [
      ['a message', message({ body: 'hello' }), {}, 'notify'],
      ['a notice', message({ msgtype: 'm.notice', body: 'bot says hi alice' }), {}, 'silent'],
      ['an encrypted event', { type: 'm.room.encrypted', room_id: room, sender: other, content: { ciphertext: 'x' } }, {}, 'notify'],
      ['a 1:1 encrypted event', { type: 'm.room.encrypted', room_id: room, sender: other, content: {} }, { memberCount: 2 }, 'notify'],
      ['someone else joining', { type: 'm.room.member', state_key: other, room_id: room, sender: other, content: { membership: 'join' } }, {}, 'silent'],
      ['an invite for me', { type: 'm.room.member', state_key: me, room_id: room, sender: other, content: { membership: 'invite' } }, {}, 'notify'],
      ['a mention in m.mentions', message({ body: 'hey', 'm.mentions': { user_ids: [me] } }), {}, 'highlight'],
      ['someone else mentioned', message({ body: 'hey', 'm.mentions': { user_ids: ['@carol:hs.test'] } }), {}, 'notify'],
      ['my display name, any case', message({ body: 'thanks, alice liddell!' }), {}, 'highlight'],
      ['my display name inside a word', message({ body: 'xAlice Liddellx' }), { displayName: 'Alice Liddell' }, 'notify'],
      ['my localpart as a word', message({ body: 'ALICE: look' }), { displayName: 'Someone' }, 'highlight'],
      ['my localpart inside a word', message({ body: 'malice' }), { displayName: 'Someone' }, 'notify'],
      ['@room by a moderator', message({ body: '@room lunch' }), {}, 'highlight'],
      ['@room by a user without the power', message({ body: '@room lunch' }), { powerLevels: { users_default: 0 } }, 'notify'],
      ['@room with a lowered notification level', message({ body: '@room lunch' }), { powerLevels: { users_default: 0, notifications: { room: 0 } } }, 'highlight'],
      ['a room mention in m.mentions', message({ body: 'all', 'm.mentions': { room: true } }), {}, 'highlight'],
      ['a reaction', { type: 'm.reaction', room_id: room, sender: other, content: { 'm.relates_to': { rel_type: 'm.annotation', key: '👍' } } }, {}, 'silent'],
      ['an edit', message({ body: '* fixed', 'm.relates_to': { rel_type: 'm.replace', event_id: '$e' } }), {}, 'silent'],
      ['a tombstone', { type: 'm.room.tombstone', state_key: '', room_id: room, sender: other, content: { body: 'moved' } }, {}, 'highlight'],
      ['a call invite', { type: 'm.call.invite', room_id: room, sender: other, content: {} }, {}, 'notify'],
      ['an unknown type', { type: 'org.example.thing', room_id: room, sender: other, content: { body: 'hello' } }, {}, 'silent'],
    ]
    for (const [name, event, context, expected] of cases) expect([name, outcome(event, context)]).to.deep.equal([name, expected])
  })

  it('should let user rules of each kind decide before the defaults, and skip disabled ones', () => {
    const hello = message({ body: 'hello' })
    expect(outcome(hello, {}, withRule('room', { rule_id: room, actions: [] }))).to.equal('silent')
    expect(outcome(hello, {}, withRule('room', { rule_id: '!elsewhere:hs.test', actions: [] }))).to.equal('notify')
    expect(outcome(hello, {}, withRule('sender', { rule_id: other, actions: ['dont_notify'] }))).to.equal('silent')
    expect(outcome(hello, {}, withRule('room', { rule_id: room, actions: [], enabled: false }))).to.equal('notify')
    // Content rules come before room rules: a room rule does not silence the user's name (an override rule does).
    expect(outcome(message({ body: 'hello alice' }), {}, withRule('room', { rule_id: room, actions: [] }))).to.equal('highlight')
    const muted = withRule('override', { rule_id: room, conditions: [{ kind: 'event_match', key: 'room_id', pattern: room }], actions: [] })
    expect(outcome(message({ body: 'hello alice' }), {}, muted)).to.equal('silent')
    expect(outcome(message({ body: 'the Cheshire cat' }), {}, withRule('content', { rule_id: 'cat', pattern: 'cheshire', actions: ['notify', { set_tweak: 'highlight' }] }))).to.equal('highlight')
    // Content rules come after override rules: a notice stays silent whatever its words.
    expect(outcome(message({ msgtype: 'm.notice', body: 'cheshire' }), {}, withRule('content', { rule_id: 'cat', pattern: 'cheshire', actions: ['notify'] }))).to.equal('silent')
    const master: PushRuleSet = { global: { ...rules.global, override: rules.global.override.map((r) => (r.rule_id === '.m.rule.master' ? { ...r, enabled: true } : r)) } }
    expect(outcome(message({ body: 'alice', 'm.mentions': { user_ids: [me] } }), {}, master)).to.equal('silent')
    expect(outcome(message({ body: 'hello alice' }), {}, withRule('override', { rule_id: 'quiet', conditions: [], actions: ['notify', { set_tweak: 'highlight', value: false }] }))).to.equal('notify')
  })

  it('should match each condition kind as the spec says', () => {
    const cond = (condition: Record<string, unknown>, event: PushEvent, context: Partial<PushContext> = {}) =>
      outcome(event, context, withRule('override', { rule_id: 'c', conditions: [condition as PushCondition], actions: ['notify', { set_tweak: 'highlight' }] })) === 'highlight'
    const e = message({ body: 'Look at this', 'm.relates_to': { rel_type: 'm.thread' }, flags: ['a', 1, true], n: 3, z: null }, { 'a.b': { c: 'dotted' } })
    expect(cond({ kind: 'event_match', key: 'type', pattern: 'm.room.*' }, e)).to.equal(true)
    expect(cond({ kind: 'event_match', key: 'type', pattern: 'M.ROOM.MESSAG?' }, e)).to.equal(true)
    expect(cond({ kind: 'event_match', key: 'type', pattern: 'm.room' }, e)).to.equal(false)
    expect(cond({ kind: 'event_match', key: 'content.body', pattern: 'look' }, e)).to.equal(true)
    expect(cond({ kind: 'event_match', key: 'content.body', pattern: 'loo' }, e)).to.equal(false)
    expect(cond({ kind: 'event_match', key: 'content.body', pattern: 'at th*' }, e)).to.equal(true)
    expect(cond({ kind: 'event_match', key: 'content.n', pattern: '3' }, e)).to.equal(false)
    expect(cond({ kind: 'event_match', key: 'a\\.b.c', pattern: 'dotted' }, e)).to.equal(true)
    expect(cond({ kind: 'event_property_is', key: 'content.m\\.relates_to.rel_type', value: 'm.thread' }, e)).to.equal(true)
    expect(cond({ kind: 'event_property_is', key: 'content.n', value: 3 }, e)).to.equal(true)
    expect(cond({ kind: 'event_property_is', key: 'content.z', value: null }, e)).to.equal(true)
    expect(cond({ kind: 'event_property_is', key: 'content.missing', value: null }, e)).to.equal(false)
    expect(cond({ kind: 'event_property_is', key: 'content.n', value: '3' }, e)).to.equal(false)
    expect(cond({ kind: 'event_property_contains', key: 'content.flags', value: 1 }, e)).to.equal(true)
    expect(cond({ kind: 'event_property_contains', key: 'content.flags', value: 'b' }, e)).to.equal(false)
    expect(cond({ kind: 'event_property_contains', key: 'content.body', value: 'L' }, e)).to.equal(false)
    for (const [is, count, holds] of [['2', 2, true], ['==2', 3, false], ['<3', 2, true], ['>3', 3, false], ['>=3', 3, true], ['<=1', 2, false], ['two', 2, false]] as const) {
      expect([is, count, cond({ kind: 'room_member_count', is }, e, { memberCount: count })]).to.deep.equal([is, count, holds])
    }
    expect(cond({ kind: 'contains_display_name' }, message({ body: 'hi Alice Liddell' }))).to.equal(true)
    expect(cond({ kind: 'contains_display_name' }, message({ body: 'hi' }), { displayName: '' })).to.equal(false)
    expect(cond({ kind: 'contains_display_name' }, message({ body: 'a.b' }), { displayName: 'a.b' })).to.equal(true)
    expect(cond({ kind: 'contains_display_name' }, message({ body: 'axb' }), { displayName: 'a.b' })).to.equal(false)
    expect(cond({ kind: 'sender_notification_permission', key: 'room' }, e)).to.equal(true)
    expect(cond({ kind: 'sender_notification_permission', key: 'room' }, e, { powerLevels: { users: { [other]: '49' } } })).to.equal(false)
    expect(cond({ kind: 'org.example.unknown' }, e)).to.equal(false)
  })

  it('should read dotted keys with escapes', () => {
    const event = { content: { 'm.relates_to': { rel_type: 'x' }, 'a\\b': 1, list: [1] } }
    expect(property(event, 'content.m\\.relates_to.rel_type')).to.equal('x')
    expect(property(event, 'content.a\\\\b')).to.equal(1)
    expect(property(event, 'content.list.0')).to.equal(undefined)
    expect(property(event, 'content.nothing.deeper')).to.equal(undefined)
  })

  it('should never throw, and highlight only what notifies, whatever the event (property)', () => {
    const json = fc.jsonValue({ maxDepth: 3 })
    const event = fc.record(
      {
        type: fc.oneof(fc.constantFrom('m.room.message', 'm.room.member', 'm.room.encrypted', 'm.reaction'), fc.string()),
        sender: fc.oneof(fc.constant(other), fc.constant(me), json),
        state_key: fc.oneof(fc.constant(me), json),
        content: fc.oneof(fc.dictionary(fc.constantFrom('body', 'msgtype', 'membership', 'm.mentions', 'm.relates_to'), json), json),
      },
      { requiredKeys: ['type'] },
    )
    const context = fc.record({
      userId: fc.constant(me),
      displayName: fc.option(fc.string(), { nil: undefined }),
      memberCount: fc.nat(10),
      powerLevels: fc.option(fc.dictionary(fc.constantFrom('users', 'users_default', 'notifications'), json), { nil: undefined }),
    })
    fc.assert(
      fc.property(event, context, (e, c) => {
        const result = evaluatePushRules(rules, e, c)
        expect(typeof result.notify).to.equal('boolean')
        if (result.highlight) expect(result.notify).to.equal(true)
      }),
    )
  })
})
