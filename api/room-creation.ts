import type { NewEvent } from '../persisters/new-event.js'
import { authorizeEvent, stateKey, supportedRoomVersions, type RoomStateEvent } from '../persisters/auth-rules.js'
import { forbidden, invalidParam, MatrixError } from './errors.js'
import { isUserId, maxIdentifierLength, serverNameOf } from './room-ids.js'

/**
 * `POST /createRoom` as events: the body becomes the room's initial events in the spec's order
 * (client-server API, "Creation"), with Synapse's presets and default power levels:
 *
 * 1. m.room.create (`creation_content`, with `room_version` forced to the version created; v11
 *    has no `creator` field: the sender is the creator)
 * 2. the creator's join (with their display name and avatar)
 * 3. m.room.power_levels: `initial_state`'s when it has one (then `power_level_content_override`
 *    does not apply, as Synapse), else the defaults, the preset's changes (invite 0 for private
 *    presets; invitees 100 under `trusted_private_chat`) and `power_level_content_override`
 *    (shallow)
 * 4. m.room.canonical_alias when `room_alias_name` is given
 * 5. the preset's join rules, history visibility and guest access, each unless `initial_state` sets it
 * 6. `initial_state` (the last entry wins per type and state key)
 * 7. m.room.name, m.room.topic
 * 8. invites (`is_direct` in their content when the room is direct)
 *
 * The plan is authorized locally against the v11 rules before anything is sent, so a request
 * whose initial state cannot work (the creator's power lowered below what the next event needs)
 * is 400 `M_INVALID_ROOM_STATE` and creates nothing. The persister still authorizes each event.
 */

export const roomPresets = ['private_chat', 'public_chat', 'trusted_private_chat'] as const
export type RoomPreset = (typeof roomPresets)[number]

/** Most invitees and `initial_state` entries per request (Synapse rate-limits invites instead). */
export const maxCreateRoomInvites = 100
export const maxInitialStateEvents = 100

/** The createRoom request body (fields the spec defines; `invite_3pid` must be empty). */
export interface CreateRoomBody {
  readonly visibility?: 'public' | 'private'
  readonly room_alias_name?: string
  readonly name?: string
  readonly topic?: string
  readonly invite?: readonly string[]
  readonly invite_3pid?: readonly unknown[]
  readonly room_version?: string
  readonly creation_content?: Readonly<Record<string, unknown>>
  readonly initial_state?: readonly { readonly type: string; readonly state_key?: string; readonly content: Readonly<Record<string, unknown>> }[]
  readonly preset?: RoomPreset
  readonly is_direct?: boolean
  readonly power_level_content_override?: Readonly<Record<string, unknown>>
}

/** JSON schema of `CreateRoomBody` (unknown fields are ignored, as the spec allows). */
export const createRoomBodySchema = {
  type: 'object',
  properties: {
    visibility: { type: 'string', enum: ['public', 'private'] },
    room_alias_name: { type: 'string', minLength: 1, maxLength: maxIdentifierLength },
    name: { type: 'string', maxLength: 1024 },
    topic: { type: 'string', maxLength: 32_768 },
    invite: { type: 'array', maxItems: maxCreateRoomInvites, items: { type: 'string', maxLength: maxIdentifierLength } },
    invite_3pid: { type: 'array', maxItems: 0 },
    room_version: { type: 'string', maxLength: 64 },
    creation_content: { type: 'object' },
    initial_state: {
      type: 'array',
      maxItems: maxInitialStateEvents,
      items: {
        type: 'object',
        required: ['type', 'content'],
        properties: {
          type: { type: 'string', minLength: 1, maxLength: maxIdentifierLength },
          state_key: { type: 'string', maxLength: maxIdentifierLength },
          content: { type: 'object' },
        },
      },
    },
    preset: { type: 'string', enum: roomPresets },
    is_direct: { type: 'boolean' },
    power_level_content_override: { type: 'object' },
  },
} as const

/** What a createRoom request does. */
export interface RoomCreationPlan {
  /** The initial events, in order, all sent by the creator. */
  readonly events: NewEvent[]
  /** `#room_alias_name:server`, to be created once the room exists. */
  readonly alias?: string
  /** Whether the room is published in the room directory (`visibility: public`). */
  readonly published: boolean
  /** The invited users (deduplicated), all of this server. */
  readonly invitees: readonly string[]
}

/** The creator's profile, copied into their join event. */
export interface CreatorProfile {
  readonly displayname?: string | null
  readonly avatar_url?: string | null
}

interface Preset {
  readonly joinRule: string
  readonly historyVisibility: string
  readonly inviteesAreAdmins: boolean
  readonly guestCanJoin: boolean
  readonly powerLevels: Readonly<Record<string, unknown>>
}

const presets: Record<RoomPreset, Preset> = {
  private_chat: { joinRule: 'invite', historyVisibility: 'shared', inviteesAreAdmins: false, guestCanJoin: true, powerLevels: { invite: 0 } },
  trusted_private_chat: { joinRule: 'invite', historyVisibility: 'shared', inviteesAreAdmins: true, guestCanJoin: true, powerLevels: { invite: 0 } },
  public_chat: { joinRule: 'public', historyVisibility: 'shared', inviteesAreAdmins: false, guestCanJoin: false, powerLevels: {} },
}

/** Synapse's default power levels for a new room (without its MSC2716 `historical`). */
function defaultPowerLevels(creator: string): Record<string, unknown> {
  return {
    users: { [creator]: 100 },
    users_default: 0,
    events: {
      'm.room.name': 50,
      'm.room.power_levels': 100,
      'm.room.history_visibility': 100,
      'm.room.canonical_alias': 50,
      'm.room.avatar': 50,
      'm.room.tombstone': 100,
      'm.room.server_acl': 100,
      'm.room.encryption': 100,
    },
    events_default: 0,
    state_default: 50,
    ban: 50,
    kick: 50,
    redact: 50,
    invite: 50,
  }
}

/**
 * Turns a createRoom request of `creator` (a user of `serverName`) into its initial events, and
 * checks them against the v11 authorization rules.
 *
 * @throws MatrixError 400 `M_UNSUPPORTED_ROOM_VERSION` (only `11`), 400 `M_INVALID_PARAM` (a
 *   malformed alias name or invitee), 403 `M_FORBIDDEN` (an invitee of another server: no
 *   federation), 400 `M_INVALID_ROOM_STATE` (the events would not pass authorization).
 * @example
 * const plan = planRoomCreation('!r:example.org', '@alice:example.org', 'example.org', { preset: 'public_chat', name: 'Lobby' })
 * plan.events.map((e) => e.type)
 * // ['m.room.create', 'm.room.member', 'm.room.power_levels', 'm.room.join_rules', 'm.room.history_visibility', 'm.room.name']
 */
export function planRoomCreation(roomId: string, creator: string, serverName: string, body: CreateRoomBody, profile: CreatorProfile = {}): RoomCreationPlan {
  const roomVersion = body.room_version ?? '11'
  if (!supportedRoomVersions.includes(roomVersion)) {
    throw new MatrixError(400, 'M_UNSUPPORTED_ROOM_VERSION', `Room version ${JSON.stringify(roomVersion)} is not supported (supported: ${supportedRoomVersions.join(', ')})`)
  }
  const alias = body.room_alias_name === undefined ? undefined : aliasOf(body.room_alias_name, serverName)
  const invitees = [...new Set(body.invite ?? [])]
  for (const invitee of invitees) {
    if (!isUserId(invitee)) throw invalidParam(`Invalid user_id: ${JSON.stringify(invitee)}`)
    if (serverNameOf(invitee) !== serverName) throw forbidden(`Cannot invite ${invitee}: federation is not supported`)
  }
  const override = body.power_level_content_override
  if (override !== undefined && isObject(override['users']) && !Object.hasOwn(override['users'], creator)) {
    throw invalidRoomState(`power_level_content_override.users does not contain the creator ${creator}`)
  }

  const published = body.visibility === 'public'
  const preset = presets[body.preset ?? (published ? 'public_chat' : 'private_chat')]
  const initialState = new Map<string, { type: string; stateKey: string; content: Readonly<Record<string, unknown>> }>()
  for (const entry of body.initial_state ?? []) {
    const key = stateKey(entry.type, entry.state_key ?? '')
    initialState.delete(key)
    initialState.set(key, { type: entry.type, stateKey: entry.state_key ?? '', content: entry.content })
  }
  if (initialState.has(stateKey('m.room.create', ''))) throw invalidRoomState('initial_state cannot contain m.room.create')
  const takeInitial = (type: string) => {
    const entry = initialState.get(stateKey(type, ''))
    initialState.delete(stateKey(type, ''))
    return entry?.content
  }
  const unlessInitial = (type: string, content: Record<string, unknown>): NewEvent[] =>
    initialState.has(stateKey(type, '')) ? [] : [state(creator, type, '', content)]

  const events: NewEvent[] = [
    state(creator, 'm.room.create', '', { ...body.creation_content, room_version: roomVersion }),
    state(creator, 'm.room.member', creator, { membership: 'join', ...profileContent(profile) }),
    state(creator, 'm.room.power_levels', '', takeInitial('m.room.power_levels') ?? powerLevelsFor(creator, preset, invitees, override)),
    ...(alias === undefined ? [] : unlessInitial('m.room.canonical_alias', { alias })),
    ...unlessInitial('m.room.join_rules', { join_rule: preset.joinRule }),
    ...unlessInitial('m.room.history_visibility', { history_visibility: preset.historyVisibility }),
    ...(preset.guestCanJoin ? unlessInitial('m.room.guest_access', { guest_access: 'can_join' }) : []),
    ...[...initialState.values()].map((entry) => state(creator, entry.type, entry.stateKey, entry.content)),
    ...(body.name === undefined ? [] : [state(creator, 'm.room.name', '', { name: body.name })]),
    ...(body.topic === undefined ? [] : [state(creator, 'm.room.topic', '', { topic: body.topic })]),
    ...invitees.map((invitee) => state(creator, 'm.room.member', invitee, { membership: 'invite', ...(body.is_direct === true && { is_direct: true }) })),
  ]
  authorizeLocally(roomId, events)
  return { events, published, invitees, ...(alias !== undefined && { alias }) }
}

function powerLevelsFor(creator: string, preset: Preset, invitees: readonly string[], override: Readonly<Record<string, unknown>> | undefined): Record<string, unknown> {
  const levels = defaultPowerLevels(creator)
  if (preset.inviteesAreAdmins) {
    levels['users'] = { ...(levels['users'] as Record<string, number>), ...Object.fromEntries(invitees.map((invitee) => [invitee, 100])) }
  }
  return { ...levels, ...preset.powerLevels, ...override }
}

/** Runs the v11 rules over the planned events in order, as the persister will. */
function authorizeLocally(roomId: string, events: readonly NewEvent[]): void {
  const roomState = new Map<string, RoomStateEvent>()
  for (const event of events) {
    const result = authorizeEvent({ ...event, room_id: roomId }, roomState)
    if (!result.ok) throw invalidRoomState(`${event.type}${event.state_key ? ` (${event.state_key})` : ''}: ${result.reason}`)
    if (event.state_key !== undefined) {
      roomState.set(stateKey(event.type, event.state_key), { type: event.type, state_key: event.state_key, sender: event.sender, content: event.content })
    }
  }
}

function aliasOf(name: string, serverName: string): string {
  if (/[\s:]/.test(name)) {
    throw invalidParam(`room_alias_name must be a local part without whitespace or ':' ('lobby', not '#lobby:${serverName}')`)
  }
  const alias = `#${name}:${serverName}`
  if (alias.length > maxIdentifierLength) throw invalidParam(`The room alias ${alias} is longer than ${maxIdentifierLength} characters`)
  return alias
}

/**
 * The `displayname` and `avatar_url` of a member event (those set in the profile).
 *
 * @example
 * profileContent({ displayname: 'Alice', avatar_url: null }) // { displayname: 'Alice' }
 */
export function profileContent(profile: CreatorProfile): Record<string, string> {
  return {
    ...(typeof profile.displayname === 'string' && { displayname: profile.displayname }),
    ...(typeof profile.avatar_url === 'string' && { avatar_url: profile.avatar_url }),
  }
}

function state(sender: string, type: string, key: string, content: Readonly<Record<string, unknown>>): NewEvent {
  return { type, state_key: key, sender, content }
}

function invalidRoomState(message: string): MatrixError {
  return new MatrixError(400, 'M_INVALID_ROOM_STATE', message)
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}
