import { authorizeEvent, stateKey, supportedRoomVersions, type RoomStateEvent } from '../persisters/auth-rules.js'
import type { NewEvent } from '../persisters/new-event.js'
import { forbidden, MatrixError } from './errors.js'
import { planRoomCreation, type CreatorProfile, type RoomCreationPlan } from './room-creation.js'

/**
 * `POST /rooms/{roomId}/upgrade` (client-server API "Room Upgrades") as a plan, the way Synapse
 * does it:
 *
 * 1. the replacement room is created with `predecessor` (the old room and its last event) in its
 *    create event, `m.federate` and `type` copied from the old one, and a copy of the old room's
 *    state that defines it: power levels, join rules, history visibility, guest access, name,
 *    topic, avatar, encryption, server ACLs, canonical alias, and its bans. When the upgrading
 *    user's power is below what sending that state needs, the copied power levels raise them
 *    for the creation and the old ones are sent again right after (`restorePowerLevels`);
 * 2. the old room gets an `m.room.tombstone` pointing at the replacement;
 * 3. the old room's power levels are restricted so that ordinary members can no longer send or
 *    invite there (`events_default` and `invite` at least 50 and above `users_default`).
 *
 * The caller moves the old room's local aliases and its room directory entry, and strips its
 * canonical alias. Only users who may send the tombstone may upgrade (403 otherwise), which is
 * checked here against the old room's state before anything is created.
 */

/** State copied into the replacement room (Synapse's list); bans and the canonical alias too. */
export const copiedStateTypes = [
  'm.room.server_acl',
  'm.room.encryption',
  'm.room.name',
  'm.room.avatar',
  'm.room.topic',
  'm.room.guest_access',
  'm.room.history_visibility',
  'm.room.join_rules',
  'm.room.power_levels',
  'm.room.canonical_alias',
] as const

/** The request body. */
export interface RoomUpgradeBody {
  readonly new_version: string
}

export const roomUpgradeBodySchema = {
  type: 'object',
  required: ['new_version'],
  properties: { new_version: { type: 'string', minLength: 1, maxLength: 64 } },
} as const

/** What an upgrade does, in order. */
export interface RoomUpgradePlan {
  /** The replacement room's creation (its events, all sent by the upgrading user). */
  readonly creation: RoomCreationPlan
  /** The old power levels, to send in the new room after its creation when they were raised. */
  readonly restorePowerLevels?: NewEvent
  /** Sent in the old room once the replacement exists. */
  readonly tombstone: NewEvent
  /** The old room's restricted power levels (absent: already restrictive enough). */
  readonly restrictOldRoom?: NewEvent
}

export interface RoomUpgradeInput {
  readonly oldRoomId: string
  readonly newRoomId: string
  readonly user: string
  readonly serverName: string
  readonly newVersion: string
  /** The old room's latest event (its deepest forward extremity): `predecessor.event_id`. */
  readonly lastEventId: string
  /** The old room's current state: at least its create event, power levels, `copiedStateTypes`, the user's membership and the bans. */
  readonly state: readonly RoomStateEvent[]
  readonly profile?: CreatorProfile
}

/**
 * @throws MatrixError 400 `M_UNSUPPORTED_ROOM_VERSION`, 403 `M_FORBIDDEN` (the user may not
 *   send the tombstone).
 * @example
 * const plan = planRoomUpgrade({ oldRoomId, newRoomId: generateRoomId(hs), user, serverName: hs, newVersion: '11', lastEventId, state })
 * plan.tombstone.content // { body: 'This room has been replaced', replacement_room: newRoomId }
 */
export function planRoomUpgrade(input: RoomUpgradeInput): RoomUpgradePlan {
  const { user, newVersion } = input
  if (!supportedRoomVersions.includes(newVersion)) {
    throw new MatrixError(400, 'M_UNSUPPORTED_ROOM_VERSION', `Room version ${JSON.stringify(newVersion)} is not supported (supported: ${supportedRoomVersions.join(', ')})`)
  }
  const state = new Map(input.state.map((event) => [stateKey(event.type, event.state_key), event]))
  const tombstone: NewEvent = { type: 'm.room.tombstone', state_key: '', sender: user, content: { body: 'This room has been replaced', replacement_room: input.newRoomId } }
  const mayTombstone = authorizeEvent({ ...tombstone, room_id: input.oldRoomId }, state)
  if (!mayTombstone.ok) throw forbidden(`You cannot upgrade this room: ${mayTombstone.reason}`)

  const oldCreate = state.get(stateKey('m.room.create', ''))?.content ?? {}
  const creationContent: Record<string, unknown> = { predecessor: { room_id: input.oldRoomId, event_id: input.lastEventId } }
  for (const key of ['m.federate', 'type']) if (key in oldCreate) creationContent[key] = oldCreate[key]

  const levels = { ...(state.get(stateKey('m.room.power_levels', ''))?.content ?? {}) }
  const users = isObject(levels['users']) ? levels['users'] : {}
  const levelOf = (userId: string) => numberOr(users[userId], numberOr(levels['users_default'], 0))
  const bans = input.state.filter((event) => event.type === 'm.room.member' && event.content['membership'] === 'ban')
  // What sending the copied state (and the bans) asks of the sender, as Synapse reckons it.
  const eventLevels = isObject(levels['events']) ? Object.values(levels['events']).map((v) => numberOr(v, 0)) : []
  const needed = Math.max(numberOr(levels['state_default'], 50), bans.length > 0 ? numberOr(levels['ban'], 50) : 0, ...eventLevels)
  const ownLevel = levelOf(user)
  const raised = ownLevel < needed
  const initialLevels = raised ? { ...levels, users: { ...users, [user]: needed } } : levels
  const senderLevel = Math.max(ownLevel, needed)

  const copied = copiedStateTypes
    .filter((type) => type !== 'm.room.power_levels')
    .flatMap((type) => {
      const event = state.get(stateKey(type, ''))
      return event === undefined ? [] : [{ type, state_key: '', content: event.content }]
    })
  // Without these in the old room, their defaults (invite only, shared history) are spelled out
  // so the creation preset adds nothing the old room did not have.
  const defaults = [
    ...(state.has(stateKey('m.room.join_rules', '')) ? [] : [{ type: 'm.room.join_rules', state_key: '', content: { join_rule: 'invite' } }]),
    ...(state.has(stateKey('m.room.history_visibility', '')) ? [] : [{ type: 'm.room.history_visibility', state_key: '', content: { history_visibility: 'shared' } }]),
  ]
  // Bans the user could not issue (targets at or above their level) stay behind.
  const copiedBans = bans.filter((ban) => levelOf(ban.state_key) < senderLevel).map((ban) => ({ type: 'm.room.member', state_key: ban.state_key, content: { membership: 'ban' } }))

  const creation = planRoomCreation(
    input.newRoomId,
    user,
    input.serverName,
    {
      room_version: newVersion,
      creation_content: creationContent,
      preset: 'public_chat',
      initial_state: [{ type: 'm.room.power_levels', state_key: '', content: initialLevels }, ...defaults, ...copied, ...copiedBans],
    },
    input.profile,
  )

  const restricted = Math.max(50, numberOr(levels['users_default'], 0) + 1)
  const restrictOldRoom =
    numberOr(levels['events_default'], 0) < restricted || numberOr(levels['invite'], 0) < restricted
      ? ({
          type: 'm.room.power_levels',
          state_key: '',
          sender: user,
          content: { ...levels, events_default: Math.max(numberOr(levels['events_default'], 0), restricted), invite: Math.max(numberOr(levels['invite'], 0), restricted) },
        } satisfies NewEvent)
      : undefined

  return {
    creation,
    tombstone,
    ...(raised && { restorePowerLevels: { type: 'm.room.power_levels', state_key: '', sender: user, content: levels } }),
    ...(restrictOldRoom !== undefined && { restrictOldRoom }),
  }
}

function numberOr(value: unknown, fallback: number): number {
  return typeof value === 'number' && Number.isInteger(value) ? value : fallback
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}
