/**
 * The Matrix spec's server-default push rules (client-server API v1.11, "Predefined rules"), in
 * the spec's order of priority within each kind.
 */

export const pushRuleKinds = ['override', 'content', 'room', 'sender', 'underride'] as const
export type PushRuleKind = (typeof pushRuleKinds)[number]

/** An action: `'notify'` (or legacy `'dont_notify'`/`'coalesce'`) or a tweak. */
export type PushAction = string | { set_tweak: string; value?: unknown }

export interface PushCondition {
  readonly kind: string
  readonly [key: string]: unknown
}

export interface PushRule {
  readonly rule_id: string
  readonly default: boolean
  readonly enabled: boolean
  readonly actions: PushAction[]
  /** override and underride rules only. */
  readonly conditions?: PushCondition[]
  /** content rules only. */
  readonly pattern?: string
}

/** `{global: {override: […], content: […], room: […], sender: […], underride: […]}}`. */
export interface PushRuleSet {
  readonly global: Record<PushRuleKind, PushRule[]>
}

const sound = { set_tweak: 'sound', value: 'default' }
const highlight = { set_tweak: 'highlight' }

function rule(rule_id: string, actions: PushAction[], conditions?: PushCondition[], extra: { enabled?: boolean; pattern?: string } = {}): PushRule {
  return { rule_id, default: true, enabled: extra.enabled ?? true, actions, ...(conditions && { conditions }), ...(extra.pattern !== undefined && { pattern: extra.pattern }) }
}

function eventMatch(key: string, pattern: string): PushCondition {
  return { kind: 'event_match', key, pattern }
}

/**
 * The default rule set of a user (the rules mention the user's ID and localpart).
 *
 * @example
 * defaultPushRules('@alice:example.org').global.override[0].rule_id // '.m.rule.master'
 */
export function defaultPushRules(userId: string): PushRuleSet {
  const localpart = userId.slice(1, userId.includes(':') ? userId.indexOf(':') : undefined)
  return {
    global: {
      override: [
        rule('.m.rule.master', [], [], { enabled: false }),
        rule('.m.rule.suppress_notices', [], [eventMatch('content.msgtype', 'm.notice')]),
        rule('.m.rule.invite_for_me', ['notify', sound], [
          eventMatch('type', 'm.room.member'),
          eventMatch('content.membership', 'invite'),
          eventMatch('state_key', userId),
        ]),
        rule('.m.rule.member_event', [], [eventMatch('type', 'm.room.member')]),
        rule('.m.rule.is_user_mention', ['notify', sound, highlight], [
          { kind: 'event_property_contains', key: 'content.m\\.mentions.user_ids', value: userId },
        ]),
        rule('.m.rule.contains_display_name', ['notify', sound, highlight], [{ kind: 'contains_display_name' }]),
        rule('.m.rule.is_room_mention', ['notify', highlight], [
          { kind: 'event_property_is', key: 'content.m\\.mentions.room', value: true },
          { kind: 'sender_notification_permission', key: 'room' },
        ]),
        rule('.m.rule.roomnotif', ['notify', highlight], [
          { kind: 'sender_notification_permission', key: 'room' },
          eventMatch('content.body', '@room'),
        ]),
        rule('.m.rule.tombstone', ['notify', highlight], [eventMatch('type', 'm.room.tombstone'), eventMatch('state_key', '')]),
        rule('.m.rule.reaction', [], [eventMatch('type', 'm.reaction')]),
        rule('.m.rule.room.server_acl', [], [eventMatch('type', 'm.room.server_acl'), eventMatch('state_key', '')]),
        rule('.m.rule.suppress_edits', [], [
          { kind: 'event_property_is', key: 'content.m\\.relates_to.rel_type', value: 'm.replace' },
        ]),
      ],
      content: [rule('.m.rule.contains_user_name', ['notify', sound, highlight], undefined, { pattern: localpart })],
      room: [],
      sender: [],
      underride: [
        rule('.m.rule.call', ['notify', { set_tweak: 'sound', value: 'ring' }], [eventMatch('type', 'm.call.invite')]),
        rule('.m.rule.encrypted_room_one_to_one', ['notify', sound], [
          { kind: 'room_member_count', is: '2' },
          eventMatch('type', 'm.room.encrypted'),
        ]),
        rule('.m.rule.room_one_to_one', ['notify', sound], [{ kind: 'room_member_count', is: '2' }, eventMatch('type', 'm.room.message')]),
        rule('.m.rule.message', ['notify'], [eventMatch('type', 'm.room.message')]),
        rule('.m.rule.encrypted', ['notify'], [eventMatch('type', 'm.room.encrypted')]),
      ],
    },
  }
}
