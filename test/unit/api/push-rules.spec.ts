import { expect } from 'chai'
import { applyPushRuleEdit, defaultPushRules, pushRuleKinds, type PushRuleSet } from '../../../storage/push-rules.js'

function ids(set: PushRuleSet, kind: (typeof pushRuleKinds)[number]): string[] {
  return set.global[kind].map((r) => r.rule_id)
}

function ok(result: ReturnType<typeof applyPushRuleEdit>): PushRuleSet {
  if (!result.ok) throw new Error(result.message)
  return result.rules
}

describe('push rules (storage/push-rules.ts, default-push-rules.ts)', () => {
  const userId = '@alice:hs.test'
  const defaults = defaultPushRules(userId)

  it("should hold the spec's server-default rules in the spec's order, all default and valid", () => {
    expect(ids(defaults, 'override')).to.deep.equal([
      '.m.rule.master', '.m.rule.suppress_notices', '.m.rule.invite_for_me', '.m.rule.member_event', '.m.rule.is_user_mention',
      '.m.rule.contains_display_name', '.m.rule.is_room_mention', '.m.rule.roomnotif', '.m.rule.tombstone', '.m.rule.reaction',
      '.m.rule.room.server_acl', '.m.rule.suppress_edits',
    ])
    expect(ids(defaults, 'content')).to.deep.equal(['.m.rule.contains_user_name'])
    expect(ids(defaults, 'underride')).to.deep.equal(['.m.rule.call', '.m.rule.encrypted_room_one_to_one', '.m.rule.room_one_to_one', '.m.rule.message', '.m.rule.encrypted'])
    for (const kind of pushRuleKinds) {
      for (const rule of defaults.global[kind]) {
        expect(rule.default, rule.rule_id).to.equal(true)
        expect(rule.enabled, rule.rule_id).to.equal(rule.rule_id !== '.m.rule.master')
        expect('conditions' in rule, rule.rule_id).to.equal(kind === 'override' || kind === 'underride')
      }
    }
    expect(defaults.global.content[0]?.pattern).to.equal('alice')
    expect(JSON.stringify(defaults)).to.include('"pattern":"@alice:hs.test"')
  })

  it('should put new user rules first (after .m.rule.master) and honour before/after', () => {
    let set = ok(applyPushRuleEdit(defaults, { op: 'put', kind: 'override', ruleId: 'b', actions: [] }))
    set = ok(applyPushRuleEdit(set, { op: 'put', kind: 'override', ruleId: 'a', actions: [] }))
    set = ok(applyPushRuleEdit(set, { op: 'put', kind: 'override', ruleId: 'c', actions: [], after: 'b' }))
    set = ok(applyPushRuleEdit(set, { op: 'put', kind: 'override', ruleId: 'z', actions: [], before: 'a' }))
    expect(ids(set, 'override').slice(0, 6)).to.deep.equal(['.m.rule.master', 'z', 'a', 'b', 'c', '.m.rule.suppress_notices'])
    set = ok(applyPushRuleEdit(set, { op: 'put', kind: 'underride', ruleId: 'u', actions: ['notify'] }))
    expect(ids(set, 'underride')[0]).to.equal('u')
  })

  it('should update an existing rule in place, keeping its enabled flag, and move it when asked', () => {
    let set = ok(applyPushRuleEdit(defaults, { op: 'put', kind: 'room', ruleId: '!a:hs', actions: [] }))
    set = ok(applyPushRuleEdit(set, { op: 'put', kind: 'room', ruleId: '!b:hs', actions: [] }))
    set = ok(applyPushRuleEdit(set, { op: 'enabled', kind: 'room', ruleId: '!a:hs', enabled: false }))
    set = ok(applyPushRuleEdit(set, { op: 'put', kind: 'room', ruleId: '!a:hs', actions: ['notify'] }))
    expect(set.global.room).to.deep.equal([
      { rule_id: '!b:hs', default: false, enabled: true, actions: [] },
      { rule_id: '!a:hs', default: false, enabled: false, actions: ['notify'] },
    ])
    set = ok(applyPushRuleEdit(set, { op: 'put', kind: 'room', ruleId: '!a:hs', actions: ['notify'], before: '!b:hs' }))
    expect(ids(set, 'room')).to.deep.equal(['!a:hs', '!b:hs'])
  })

  it('should refuse reserved IDs, default anchors, deleting defaults, and unknown rules, leaving the set unchanged', () => {
    const attempts = [
      [applyPushRuleEdit(defaults, { op: 'put', kind: 'override', ruleId: '.m.rule.x', actions: [] }), 'invalid'],
      [applyPushRuleEdit(defaults, { op: 'put', kind: 'content', ruleId: 'p', actions: [] }), 'invalid'],
      [applyPushRuleEdit(defaults, { op: 'put', kind: 'override', ruleId: 'x', actions: [], before: '.m.rule.reaction' }), 'invalid'],
      [applyPushRuleEdit(defaults, { op: 'put', kind: 'override', ruleId: 'x', actions: [], before: 'a', after: 'b' }), 'invalid'],
      [applyPushRuleEdit(defaults, { op: 'put', kind: 'override', ruleId: 'x', actions: [], after: 'missing' }), 'not_found'],
      [applyPushRuleEdit(defaults, { op: 'delete', kind: 'override', ruleId: '.m.rule.master' }), 'invalid'],
      [applyPushRuleEdit(defaults, { op: 'delete', kind: 'sender', ruleId: '@x:hs' }), 'not_found'],
      [applyPushRuleEdit(defaults, { op: 'actions', kind: 'sender', ruleId: '@x:hs', actions: [] }), 'not_found'],
    ] as const
    for (const [result, reason] of attempts) {
      expect(result.ok).to.equal(false)
      if (!result.ok) expect(result.reason).to.equal(reason)
    }
    expect(defaults).to.deep.equal(defaultPushRules(userId))
  })

  it('should change actions and enabled flags of default rules', () => {
    let set = ok(applyPushRuleEdit(defaults, { op: 'enabled', kind: 'override', ruleId: '.m.rule.master', enabled: true }))
    set = ok(applyPushRuleEdit(set, { op: 'actions', kind: 'underride', ruleId: '.m.rule.message', actions: [] }))
    expect(set.global.override[0]?.enabled).to.equal(true)
    expect(set.global.underride.find((r) => r.rule_id === '.m.rule.message')?.actions).to.deep.equal([])
  })
})
