import { pushRuleKinds, type PushAction, type PushCondition, type PushRule, type PushRuleSet } from './default-push-rules.js'

/**
 * Push rule evaluation (client-server API "Push Rules"): which of a user's rules an event
 * matches, and so whether it notifies them and is highlighted. Used for the unread counts of
 * /sync (storage/unread-counts.ts); pure, no database.
 *
 * Rules are tried by kind (override, content, room, sender, underride) and in order within a
 * kind; the first enabled rule whose conditions all hold decides. A condition of a kind not
 * known here makes its rule not match (spec: "unrecognised conditions MUST NOT match").
 */

/** What an event's match decides for one user. */
export interface PushOutcome {
  readonly notify: boolean
  readonly highlight: boolean
  /** The rule's `set_tweak` actions (`sound`, `highlight`, …) by name, for a push gateway. */
  readonly tweaks: Readonly<Record<string, unknown>>
  /** The matching rule's actions as written (`/notifications` shows them). */
  readonly actions: readonly PushAction[]
}

/** The room facts some conditions need, for the user whose rules are evaluated. */
export interface PushContext {
  readonly userId: string
  /** The user's display name in the room (their member event's `displayname`), if any. */
  readonly displayName: string | undefined
  /** Joined members of the room. */
  readonly memberCount: number
  /** The room's `m.room.power_levels` content, if any. */
  readonly powerLevels: Readonly<Record<string, unknown>> | undefined
}

/** An event as stored (a PDU: `type`, `sender`, `content`, optional `state_key`, `room_id`). */
export type PushEvent = Readonly<Record<string, unknown>>

const silent: PushOutcome = Object.freeze({ notify: false, highlight: false, tweaks: Object.freeze({}), actions: Object.freeze([]) as readonly PushAction[] })

/**
 * The outcome of the first rule of `rules` that `event` matches (nothing notifies when none does).
 *
 * @example
 * evaluatePushRules(defaultPushRules('@a:hs'), { type: 'm.room.message', sender: '@b:hs', content: { body: 'hi a' } }, ctx)
 * // { notify: true, highlight: true }  (the body contains the localpart)
 */
export function evaluatePushRules(rules: PushRuleSet, event: PushEvent, ctx: PushContext): PushOutcome {
  for (const kind of pushRuleKinds) {
    for (const rule of rules.global[kind] ?? []) {
      if (rule.enabled && ruleMatches(kind, rule, event, ctx)) return outcomeOf(rule.actions)
    }
  }
  return silent
}

function outcomeOf(actions: readonly PushAction[]): PushOutcome {
  let notify = false
  const tweaks: Record<string, unknown> = {}
  for (const action of actions) {
    if (action === 'notify') notify = true
    // A highlight tweak without a value is true (spec).
    else if (typeof action === 'object' && typeof action.set_tweak === 'string') tweaks[action.set_tweak] = action.set_tweak === 'highlight' ? action.value !== false : action.value
  }
  return notify ? { notify, highlight: tweaks['highlight'] === true, tweaks, actions } : silent
}

function ruleMatches(kind: (typeof pushRuleKinds)[number], rule: PushRule, event: PushEvent, ctx: PushContext): boolean {
  switch (kind) {
    case 'override':
    case 'underride':
      return (rule.conditions ?? []).every((condition) => conditionHolds(condition, event, ctx))
    case 'content':
      return rule.pattern !== undefined && globMatches(rule.pattern, property(event, 'content.body'), 'word')
    case 'room':
      return event['room_id'] === rule.rule_id
    case 'sender':
      return event['sender'] === rule.rule_id
  }
}

function conditionHolds(condition: PushCondition, event: PushEvent, ctx: PushContext): boolean {
  const key = typeof condition['key'] === 'string' ? condition['key'] : undefined
  switch (condition.kind) {
    case 'event_match': {
      const pattern = condition['pattern']
      if (key === undefined || typeof pattern !== 'string') return false
      // `content.body` matches on word boundaries, every other key the whole value.
      return globMatches(pattern, property(event, key), key === 'content.body' ? 'word' : 'whole')
    }
    case 'event_property_is':
      return key !== undefined && isExactValue(condition['value']) && property(event, key) === condition['value']
    case 'event_property_contains': {
      const values = key === undefined ? undefined : property(event, key)
      return Array.isArray(values) && isExactValue(condition['value']) && values.includes(condition['value'])
    }
    case 'contains_display_name': {
      const name = ctx.displayName
      return name !== undefined && name !== '' && wordMatcher(escapeRegExp(name)).test(stringOrEmpty(property(event, 'content.body')))
    }
    case 'room_member_count':
      return typeof condition['is'] === 'string' && memberCountMatches(condition['is'], ctx.memberCount)
    case 'sender_notification_permission':
      return key !== undefined && typeof event['sender'] === 'string' && senderLevel(ctx.powerLevels, event['sender']) >= notificationLevel(ctx.powerLevels, key)
    default:
      return false
  }
}

/** Spec: `value` of the `event_property_*` conditions is a string, integer, boolean or null. */
function isExactValue(value: unknown): boolean {
  return value === null || typeof value === 'string' || typeof value === 'boolean' || Number.isInteger(value)
}

/**
 * The value at a dotted `key` of the event: `content.m\.relates_to.rel_type` is
 * `event.content['m.relates_to'].rel_type` (`\.` a literal dot, `\\` a backslash).
 */
export function property(event: PushEvent, key: string): unknown {
  let value: unknown = event
  for (const part of splitKey(key)) {
    if (value === null || typeof value !== 'object' || Array.isArray(value) || !Object.hasOwn(value, part)) return undefined
    value = (value as Record<string, unknown>)[part]
  }
  return value
}

const splitKeys = new Map<string, readonly string[]>()

function splitKey(key: string): readonly string[] {
  let parts = splitKeys.get(key)
  if (parts === undefined) {
    const found: string[] = []
    let current = ''
    for (let i = 0; i < key.length; i++) {
      const c = key[i]!
      if (c === '\\' && (key[i + 1] === '.' || key[i + 1] === '\\')) current += key[++i]!
      else if (c === '.') {
        found.push(current)
        current = ''
      } else current += c
    }
    found.push(current)
    parts = found
    remember(splitKeys, key, parts)
  }
  return parts
}

const globs = new Map<string, RegExp>()

/**
 * Whether `value` (a string; anything else never matches) matches the glob `pattern` (`*` any
 * run of characters, `?` one character), case-insensitively: the whole value, or (`word`) a
 * run of it bounded by non-word characters or the ends.
 */
function globMatches(pattern: string, value: unknown, mode: 'whole' | 'word'): boolean {
  if (typeof value !== 'string') return false
  const cacheKey = `${mode}\u0000${pattern}`
  let re = globs.get(cacheKey)
  if (re === undefined) {
    const body = [...pattern].map((c) => (c === '*' ? '.*?' : c === '?' ? '.' : escapeRegExp(c))).join('')
    re = mode === 'word' ? wordMatcher(body) : new RegExp(`^${body}$`, 'isu')
    remember(globs, cacheKey, re)
  }
  return re.test(value)
}

/** Matches `body` (a regular expression's source) bounded by non-word characters or the ends. */
function wordMatcher(body: string): RegExp {
  return new RegExp(`(?:^|[^\\p{L}\\p{N}_])(?:${body})(?:$|[^\\p{L}\\p{N}_])`, 'isu')
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')
}

function stringOrEmpty(value: unknown): string {
  return typeof value === 'string' ? value : ''
}

/** `is`: a number optionally after `==`, `<`, `>`, `<=` or `>=` (no prefix: `==`). */
function memberCountMatches(is: string, count: number): boolean {
  const match = /^(==|<=|>=|<|>)?([0-9]+)$/.exec(is)
  if (!match) return false
  const n = Number(match[2])
  switch (match[1]) {
    case '<':
      return count < n
    case '>':
      return count > n
    case '<=':
      return count <= n
    case '>=':
      return count >= n
    default:
      return count === n
  }
}

function level(value: unknown, fallback: number): number {
  if (typeof value === 'number' && Number.isInteger(value)) return value
  // Room versions before 10 allow power levels as strings of digits.
  if (typeof value === 'string' && /^[+-]?[0-9]+$/.test(value.trim())) return Number(value)
  return fallback
}

function senderLevel(powerLevels: PushContext['powerLevels'], sender: string): number {
  if (powerLevels === undefined) return 0
  const users = powerLevels['users']
  const own = users !== null && typeof users === 'object' && Object.hasOwn(users, sender) ? (users as Record<string, unknown>)[sender] : undefined
  return level(own, level(powerLevels['users_default'], 0))
}

/** The level `notifications[key]` asks for: 50 when not set (spec, for `room`). */
function notificationLevel(powerLevels: PushContext['powerLevels'], key: string): number {
  const notifications = powerLevels?.['notifications']
  const value = notifications !== null && typeof notifications === 'object' && Object.hasOwn(notifications, key) ? (notifications as Record<string, unknown>)[key] : undefined
  return level(value, 50)
}

/** Bounded memo: patterns and keys come from users' rules, so the caches cannot grow without end. */
function remember<V>(cache: Map<string, V>, key: string, value: V): void {
  if (cache.size >= 10_000) cache.clear()
  cache.set(key, value)
}
