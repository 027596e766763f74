import { canonicalJsonBytes } from '../storage/events/canonical-json.js'

/**
 * The room version 11 authorization rules (https://spec.matrix.org/v1.11/rooms/v11/#authorization-rules)
 * as the persister applies them to events created by this server, against the room's current state.
 *
 * Implemented: rule 1 (m.room.create, with "has prev_events" read as "the room already has
 * state"), 2.4 (an m.room.create must exist), 4 (membership: join, invite, leave, ban, knock),
 * 5 (sender must be joined), 6 (m.room.third_party_invite needs the invite level), 7 (required
 * power level), 8 (`@`-prefixed state keys), 9 (m.room.power_levels validation and changes),
 * plus the client-side redaction check ("Handling redactions": the redact level, or redacting an
 * event of one's own) and the PDU size limits (`checkEventSize`).
 *
 * Left out, because every event here is created locally against state this server already trusts:
 * - signature checks (the sender's server, `join_authorised_via_users_server`) and the checks on
 *   the event's `auth_events` list (2.1–2.3): the persister derives `auth_events` from
 *   `authEventKeys` itself;
 * - rule 3 (`m.federate: false`): all senders belong to this server;
 * - third-party invites: an invite carrying `third_party_invite` is rejected as unsupported;
 * - restricted joins through allow conditions: under join rules `restricted` and
 *   `knock_restricted` a join needs an invite (or a current join), as under `invite`;
 * - "the only previous event is the m.room.create" (creator's first join) is read as "the room
 *   state holds only the m.room.create event", and the joining user must be its sender.
 *
 * All functions are pure: no I/O, no clock, inputs never mutated.
 */

/** The event being authorized: the client-supplied parts of a PDU. */
export interface AuthEventInput {
  readonly type: string
  readonly sender: string
  /** Present (possibly `''`) exactly for state events. */
  readonly state_key?: string
  readonly content: Readonly<Record<string, unknown>>
  readonly room_id: string
  readonly origin_server_ts?: number
}

/** One entry of the room's current state. */
export interface RoomStateEvent {
  readonly type: string
  readonly state_key: string
  readonly sender: string
  readonly content: Readonly<Record<string, unknown>>
}

/** The room's current state, keyed by `stateKey(type, state_key)`. */
export type RoomState = ReadonlyMap<string, RoomStateEvent>

/** Outcome of an authorization check; `reason` is a sentence for logs and for the client's `error`. */
export type AuthResult = { readonly ok: true } | { readonly ok: false; readonly reason: string }

/** Facts about other events that some checks need and that are not part of the state. */
export interface AuthContext {
  /** For `m.room.redaction`: the sender of the event being redacted, when known. */
  readonly redactedEventSender?: string
}

/** A state entry (`type`, `state_key`) whose event ID belongs in an event's `auth_events`. */
export interface AuthEventKey {
  readonly type: string
  readonly state_key: string
}

/** The power levels in force for a room state, with the spec's defaults applied. */
export interface PowerLevels {
  /** Whether the state holds an m.room.power_levels event (some defaults depend on it). */
  readonly explicit: boolean
  readonly ban: number
  readonly kick: number
  readonly invite: number
  readonly redact: number
  /** The power level of `userId`. */
  user(userId: string): number
  /** The level needed to send an event of `type`; `isState` says whether it has a `state_key`. */
  required(type: string, isState: boolean): number
}

/** Room versions whose m.room.create this module accepts (the rules implemented are v11's). */
export const supportedRoomVersions: readonly string[] = Object.freeze(['11'])

/** Largest PDU, in bytes of canonical JSON including signatures. */
export const maxPduBytes = 65_536

/** Largest `sender`, `room_id`, `state_key`, `type` and `event_id`, in UTF-8 bytes. */
export const maxPduIdentifierBytes = 255

const allowed: AuthResult = Object.freeze({ ok: true })
const namedLevels = ['users_default', 'events_default', 'state_default', 'ban', 'redact', 'kick', 'invite'] as const
const levelMaps = ['events', 'notifications'] as const
const userIdPattern = /^@[^:]*:.+$/s

/**
 * The key of a state entry in a `RoomState` map: `${type}\u0000${stateKey}`. NUL cannot occur in
 * an event type, so distinct (type, state_key) pairs never collide.
 *
 * @example
 * state.get(stateKey('m.room.member', '@alice:example.org'))
 */
export function stateKey(type: string, key: string): string {
  return `${type}\u0000${key}`
}

/**
 * A stored current state entry as the auth rules read it.
 *
 * @example
 * const state: RoomState = new Map(entries.map((e) => [stateKey(e.type, e.stateKey), stateEventOf(e)]))
 */
export function stateEventOf(entry: { readonly type: string; readonly stateKey: string; readonly sender: string; readonly content: Readonly<Record<string, unknown>> }): RoomStateEvent {
  return { type: entry.type, state_key: entry.stateKey, sender: entry.sender, content: entry.content }
}

/** A room's state, from its stored current state entries (`getCurrentState`, `getStateEntries`). */
export function roomStateOf(entries: readonly Parameters<typeof stateEventOf>[0][]): Map<string, RoomStateEvent> {
  return new Map(entries.map((entry) => [stateKey(entry.type, entry.stateKey), stateEventOf(entry)]))
}

/**
 * Decides whether `event` may be appended to a room whose current state is `state`, under the
 * room version 11 rules (see the module comment for what is left out). The caller MUST pass the
 * state at the point the event is appended (after earlier events of the same batch).
 *
 * @example
 * const result = authorizeEvent(
 *   { type: 'm.room.name', sender: '@bob:x', state_key: '', content: { name: 'Hi' }, room_id: '!r:x' },
 *   state,
 * )
 * if (!result.ok) throw new StorageError('ES_FORBIDDEN', result.reason)
 * // e.g. "sender's power level 0 is below the 50 required to send m.room.name"
 */
export function authorizeEvent(event: AuthEventInput, state: RoomState, context: AuthContext = {}): AuthResult {
  if (!isObject(event.content)) return denied('content must be an object')
  if (event.type === 'm.room.create') return authorizeCreate(event, state)
  if (!state.has(stateKey('m.room.create', ''))) return denied('the room has no m.room.create event')

  const levels = powerLevels(state)
  if (event.type === 'm.room.member') return authorizeMembership(event, state, levels)

  const senderMembership = membershipOf(state, event.sender)
  if (senderMembership !== 'join') {
    return denied(`${event.sender} is not joined to the room (membership: ${senderMembership})`)
  }
  const senderLevel = levels.user(event.sender)
  if (event.type === 'm.room.third_party_invite') {
    return atLeast(senderLevel, levels.invite, 'to send m.room.third_party_invite (the invite level)')
  }
  const isState = event.state_key !== undefined
  const required = levels.required(event.type, isState)
  if (senderLevel < required) {
    return denied(`sender's power level ${senderLevel} is below the ${required} required to send ${event.type}`)
  }
  if (event.state_key?.startsWith('@') && event.state_key !== event.sender) {
    return denied(`state key ${event.state_key} starts with @ and is not the sender ${event.sender}`)
  }
  if (event.type === 'm.room.power_levels') return authorizePowerLevels(event, state, senderLevel)
  if (event.type === 'm.room.redaction') return authorizeRedaction(event, levels, senderLevel, context)
  return allowed
}

/**
 * Checks the spec's size limits on a complete PDU (hashes and signatures included): at most
 * `maxPduBytes` bytes of canonical JSON, and `sender`, `room_id`, `state_key`, `type` and
 * `event_id` (when present) at most `maxPduIdentifierBytes` UTF-8 bytes each.
 *
 * `canonicalJson`, when the caller already encoded the PDU, saves encoding it again.
 *
 * @throws StorageError `ES_BAD_EVENT` when the PDU is not canonical-JSON encodable.
 *
 * @example
 * const size = checkEventSize(signedPdu, encodeCanonicalJson(signedPdu))
 * if (!size.ok) throw new StorageError('ES_EVENT_TOO_LARGE', size.reason)
 */
export function checkEventSize(pdu: Readonly<Record<string, unknown>>, canonicalJson?: string): AuthResult {
  for (const key of ['sender', 'room_id', 'state_key', 'type', 'event_id']) {
    const value = pdu[key]
    const bytes = typeof value === 'string' ? Buffer.byteLength(value, 'utf8') : 0
    if (bytes > maxPduIdentifierBytes) {
      return denied(`${key} is ${bytes} bytes; the limit is ${maxPduIdentifierBytes}`)
    }
  }
  const size = canonicalJson === undefined ? canonicalJsonBytes(pdu).length : Buffer.byteLength(canonicalJson, 'utf8')
  if (size > maxPduBytes) {
    return denied(`the event is ${size.toLocaleString('en-US')} bytes of canonical JSON; the limit is 65,536`)
  }
  return allowed
}

/**
 * The state entries whose event IDs form an event's `auth_events` (server-server spec, "Auth
 * events selection"): none for m.room.create; otherwise m.room.create, m.room.power_levels and
 * the sender's m.room.member; for m.room.member also the target's m.room.member, m.room.join_rules
 * when the membership is join, invite or knock, the member event of
 * `join_authorised_via_users_server`, and the m.room.third_party_invite named by
 * `third_party_invite.signed.token`. No duplicates. Entries may be absent from the state; the
 * caller MUST skip those.
 *
 * @example
 * const authEvents = authEventKeys(event)
 *   .map((k) => stateEventIds.get(stateKey(k.type, k.state_key)))
 *   .filter((id) => id !== undefined)
 */
export function authEventKeys(event: AuthEventInput): AuthEventKey[] {
  if (event.type === 'm.room.create') return []
  const keys = new Map<string, AuthEventKey>()
  const add = (type: string, key: string): void => {
    keys.set(stateKey(type, key), { type, state_key: key })
  }
  add('m.room.create', '')
  add('m.room.power_levels', '')
  add('m.room.member', event.sender)
  if (event.type === 'm.room.member' && event.state_key !== undefined) {
    const { membership, join_authorised_via_users_server: authoriser, third_party_invite: invite } = event.content
    add('m.room.member', event.state_key)
    if (membership === 'join' || membership === 'invite' || membership === 'knock') add('m.room.join_rules', '')
    if (typeof authoriser === 'string') add('m.room.member', authoriser)
    const token = isObject(invite) && isObject(invite['signed']) ? invite['signed']['token'] : undefined
    if (membership === 'invite' && typeof token === 'string') add('m.room.third_party_invite', token)
  }
  return [...keys.values()]
}

/**
 * The power levels in force in `state`. Without an m.room.power_levels event: the creator (the
 * m.room.create sender) has 100, everyone else 0, `state_default` is 0; with one, its values apply
 * with defaults `users_default` 0, `events_default` 0, `state_default` 50. In both cases `ban`,
 * `kick` and `redact` default to 50 and `invite` to 0. Non-integer values count as absent.
 *
 * @example
 * powerLevels(state).user('@alice:example.org') // 100
 * powerLevels(state).required('m.room.name', true) // 50
 */
export function powerLevels(state: RoomState): PowerLevels {
  const event = state.get(stateKey('m.room.power_levels', ''))
  const creator = state.get(stateKey('m.room.create', ''))?.sender
  const content = event?.content ?? {}
  const users = isObject(content['users']) ? content['users'] : {}
  const events = isObject(content['events']) ? content['events'] : {}
  const usersDefault = integerOr(content['users_default'], 0)
  const eventsDefault = integerOr(content['events_default'], 0)
  const stateDefault = integerOr(content['state_default'], event === undefined ? 0 : 50)
  return {
    explicit: event !== undefined,
    ban: integerOr(content['ban'], 50),
    kick: integerOr(content['kick'], 50),
    invite: integerOr(content['invite'], 0),
    redact: integerOr(content['redact'], 50),
    user(userId) {
      if (event === undefined) return userId === creator ? 100 : 0
      return integerOr(Object.hasOwn(users, userId) ? users[userId] : undefined, usersDefault)
    },
    required(type, isState) {
      const fallback = isState ? stateDefault : eventsDefault
      return integerOr(Object.hasOwn(events, type) ? events[type] : undefined, fallback)
    },
  }
}

function authorizeCreate(event: AuthEventInput, state: RoomState): AuthResult {
  if (state.has(stateKey('m.room.create', ''))) return denied('the room already has an m.room.create event')
  if (state.size > 0) return denied('m.room.create must be the first event of the room')
  if (event.state_key !== '') return denied('m.room.create must have an empty state key')
  const roomDomain = domainOf(event.room_id)
  if (roomDomain === undefined || roomDomain !== domainOf(event.sender)) {
    return denied(`the room ID ${event.room_id} and the sender ${event.sender} have different server names`)
  }
  const version = event.content['room_version']
  if (version !== undefined && typeof version !== 'string') return denied('room_version must be a string')
  if (version !== undefined && !supportedRoomVersions.includes(version)) {
    return denied(`room version ${JSON.stringify(version)} is not supported (supported: ${supportedRoomVersions.join(', ')})`)
  }
  return allowed
}

function authorizeMembership(event: AuthEventInput, state: RoomState, levels: PowerLevels): AuthResult {
  const target = event.state_key
  if (target === undefined) return denied('m.room.member needs a state key (the target user ID)')
  const membership = event.content['membership']
  if (typeof membership !== 'string') return denied('m.room.member content needs a string membership')
  const sender = event.sender
  const senderMembership = membershipOf(state, sender)
  const targetMembership = membershipOf(state, target)
  const senderLevel = levels.user(sender)
  const targetLevel = levels.user(target)

  switch (membership) {
    case 'join': {
      const create = state.get(stateKey('m.room.create', ''))
      if (state.size === 1 && create !== undefined && target === sender && create.sender === sender) return allowed
      if (sender !== target) return denied(`${sender} cannot join on behalf of ${target}`)
      if (senderMembership === 'ban') return denied(`${sender} is banned from the room`)
      const joinRule = joinRuleOf(state)
      if (joinRule === 'public') return allowed
      if (joinRule === 'invite' || joinRule === 'knock' || joinRule === 'restricted' || joinRule === 'knock_restricted') {
        if (targetMembership === 'invite' || targetMembership === 'join') return allowed
        const restrictedNote =
          joinRule === 'restricted' || joinRule === 'knock_restricted' ? '; joining through allow conditions is not supported' : ''
        return denied(`${sender} needs an invite to join a room with join rule ${joinRule}${restrictedNote}`)
      }
      return denied(`join rule ${JSON.stringify(joinRule)} does not allow joining`)
    }
    case 'invite': {
      if (event.content['third_party_invite'] !== undefined) return denied('third-party invites are not supported')
      if (senderMembership !== 'join') return denied(`${sender} cannot invite: not joined (membership: ${senderMembership})`)
      if (targetMembership === 'join') return denied(`${target} is already joined`)
      if (targetMembership === 'ban') return denied(`${target} is banned from the room`)
      return atLeast(senderLevel, levels.invite, 'to invite')
    }
    case 'leave': {
      if (sender === target) {
        if (senderMembership === 'invite' || senderMembership === 'join' || senderMembership === 'knock') return allowed
        return denied(`${sender} cannot leave: their membership is ${senderMembership}`)
      }
      if (senderMembership !== 'join') return denied(`${sender} cannot kick: not joined (membership: ${senderMembership})`)
      if (targetMembership === 'ban' && senderLevel < levels.ban) {
        return denied(`sender's power level ${senderLevel} is below the ${levels.ban} required to unban (the ban level)`)
      }
      if (senderLevel < levels.kick) {
        return denied(`sender's power level ${senderLevel} is below the ${levels.kick} required to kick (the kick level)`)
      }
      if (targetLevel >= senderLevel) {
        return denied(`${target}'s power level ${targetLevel} is not below the sender's ${senderLevel}`)
      }
      return allowed
    }
    case 'ban': {
      if (senderMembership !== 'join') return denied(`${sender} cannot ban: not joined (membership: ${senderMembership})`)
      if (senderLevel < levels.ban) {
        return denied(`sender's power level ${senderLevel} is below the ${levels.ban} required to ban (the ban level)`)
      }
      if (targetLevel >= senderLevel) {
        return denied(`${target}'s power level ${targetLevel} is not below the sender's ${senderLevel}`)
      }
      return allowed
    }
    case 'knock': {
      const joinRule = joinRuleOf(state)
      if (joinRule !== 'knock' && joinRule !== 'knock_restricted') return denied(`join rule ${joinRule} does not allow knocking`)
      if (sender !== target) return denied(`${sender} cannot knock on behalf of ${target}`)
      if (senderMembership === 'ban' || senderMembership === 'invite' || senderMembership === 'join') {
        return denied(`${sender} cannot knock: their membership is ${senderMembership}`)
      }
      return allowed
    }
    default:
      return denied(`unknown membership ${JSON.stringify(membership)}`)
  }
}

function authorizePowerLevels(event: AuthEventInput, state: RoomState, senderLevel: number): AuthResult {
  const invalid = validatePowerLevelsContent(event.content)
  if (invalid !== undefined) return denied(invalid)
  const current = state.get(stateKey('m.room.power_levels', ''))
  if (current === undefined) return allowed

  const before = current.content
  const after = event.content
  for (const name of namedLevels) {
    const problem = checkLevelChange(name, integerOrUndefined(before[name]), integerOrUndefined(after[name]), senderLevel)
    if (problem !== undefined) return denied(problem)
  }
  for (const map of levelMaps) {
    const problem = checkMapChanges(map, before[map], after[map], senderLevel, undefined)
    if (problem !== undefined) return denied(problem)
  }
  const problem = checkMapChanges('users', before['users'], after['users'], senderLevel, event.sender)
  return problem === undefined ? allowed : denied(problem)
}

/** Rules 9.1–9.3: the shape v10+ requires of m.room.power_levels content. */
function validatePowerLevelsContent(content: Readonly<Record<string, unknown>>): string | undefined {
  for (const name of namedLevels) {
    if (content[name] !== undefined && integerOrUndefined(content[name]) === undefined) {
      return `power levels: ${name} must be an integer`
    }
  }
  for (const map of [...levelMaps, 'users'] as const) {
    const value = content[map]
    if (value === undefined) continue
    if (!isObject(value)) return `power levels: ${map} must be an object`
    for (const [key, level] of Object.entries(value)) {
      if (integerOrUndefined(level) === undefined) return `power levels: ${map}[${JSON.stringify(key)}] must be an integer`
      if (map === 'users' && !userIdPattern.test(key)) return `power levels: users key ${JSON.stringify(key)} is not a user ID`
    }
  }
  return undefined
}

/** Rule 9.5: a named level the sender changes must not exceed the sender's level, before or after. */
function checkLevelChange(name: string, before: number | undefined, after: number | undefined, senderLevel: number): string | undefined {
  if (before === after) return undefined
  if (before !== undefined && before > senderLevel) {
    return `sender's power level ${senderLevel} is below the current ${name} level ${before}, so it cannot change it`
  }
  if (after !== undefined && after > senderLevel) {
    return `sender's power level ${senderLevel} is below the new ${name} level ${after}`
  }
  return undefined
}

/**
 * Rules 9.6–9.9 for one map (`events`, `notifications`, `users`): entries changed or removed must
 * not have been above the sender's level (for `users`, other than `self`: not at or above it);
 * entries added or changed must not exceed it.
 */
function checkMapChanges(map: string, before: unknown, after: unknown, senderLevel: number, self: string | undefined): string | undefined {
  const old = isObject(before) ? before : {}
  const next = isObject(after) ? after : {}
  const isUsers = map === 'users'
  for (const key of new Set([...Object.keys(old), ...Object.keys(next)])) {
    const was = Object.hasOwn(old, key) ? integerOrUndefined(old[key]) : undefined
    const now = Object.hasOwn(next, key) ? integerOrUndefined(next[key]) : undefined
    if (was === now) continue
    if (was !== undefined) {
      if (isUsers && key !== self && was >= senderLevel) {
        return `sender's power level ${senderLevel} is not above ${key}'s level ${was}, so it cannot change it`
      }
      if (was > senderLevel) {
        return `sender's power level ${senderLevel} is below the current ${map}[${JSON.stringify(key)}] level ${was}, so it cannot change it`
      }
    }
    if (now !== undefined && now > senderLevel) {
      return `sender's power level ${senderLevel} is below the new ${map}[${JSON.stringify(key)}] level ${now}`
    }
  }
  return undefined
}

function authorizeRedaction(event: AuthEventInput, levels: PowerLevels, senderLevel: number, context: AuthContext): AuthResult {
  if (typeof event.content['redacts'] !== 'string') return denied('m.room.redaction content needs a string redacts (the event ID)')
  if (senderLevel >= levels.redact) return allowed
  if (context.redactedEventSender === event.sender) return allowed
  const whose =
    context.redactedEventSender === undefined
      ? 'the redacted event is not known to be its own'
      : `the redacted event was sent by ${context.redactedEventSender}`
  return denied(`sender's power level ${senderLevel} is below the redact level ${levels.redact}, and ${whose}`)
}

function atLeast(level: number, required: number, what: string): AuthResult {
  return level >= required ? allowed : denied(`sender's power level ${level} is below the ${required} required ${what}`)
}

function membershipOf(state: RoomState, userId: string): string {
  const membership = state.get(stateKey('m.room.member', userId))?.content['membership']
  return typeof membership === 'string' ? membership : 'leave'
}

/** The room's join rule; `invite` when the room has no m.room.join_rules event (as Synapse). */
function joinRuleOf(state: RoomState): string {
  const rule = state.get(stateKey('m.room.join_rules', ''))?.content['join_rule']
  return typeof rule === 'string' ? rule : 'invite'
}

function domainOf(id: string): string | undefined {
  const colon = id.indexOf(':')
  return colon < 0 ? undefined : id.slice(colon + 1)
}

function integerOrUndefined(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isSafeInteger(value) ? value : undefined
  if (typeof value === 'bigint' && value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER)) {
    return Number(value)
  }
  return undefined
}

function integerOr(value: unknown, fallback: number): number {
  return integerOrUndefined(value) ?? fallback
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function denied(reason: string): AuthResult {
  return { ok: false, reason }
}
