import { randomBytes, randomUUID } from 'node:crypto'
import type { FastifyPluginAsync } from 'fastify'
import { stateEventOf } from '../../persisters/auth-rules.js'
import { RejectedEventError } from '../../persisters/persist-errors.js'
import { getUser, type Requester } from '../../storage/accounts.js'
import { getCurrentState, getEvent, getForwardExtremities, getRoomHead } from '../../storage/events/event-store.js'
import { roomBlock } from '../../storage/admin.js'
import { getProfile } from '../../storage/profiles.js'
import { createAlias, getAlias, moveAliases } from '../../storage/room-aliases.js'
import { isRoomPublished, setRoomPublished } from '../../storage/room-directory.js'
import { currentMembership } from '../../storage/state-entries.js'
import { stopTypingOfDeparted } from '../../storage/typing.js'
import { clientRoute, emptyBodyAsObject } from '../client-route.js'
import { forbidden, MatrixError, notFound } from '../errors.js'
import { requireUser } from '../require-user.js'
import { createRoomBodySchema, planRoomCreation, profileContent, type CreateRoomBody } from '../room-creation.js'
import { planRoomUpgrade, roomUpgradeBodySchema, type RoomUpgradeBody } from '../room-upgrade.js'
import { checkRoomId, checkUserId, generateRoomId, maxIdentifierLength, roomIdOrAlias, serverNameOf } from '../room-ids.js'
import type { NewEvent, PersistedEvent, RoomServices } from '../room-services.js'
import { createTtlCache } from '../ttl-cache.js'

/**
 * The client API's room writes: `POST /createRoom`, joining (`/join/{roomIdOrAlias}`,
 * `/rooms/{roomId}/join`), knocking (`/knock/{roomIdOrAlias}`), `leave`, `invite`, `kick`,
 * `ban`, `unban`, `forget`, `upgrade`, and
 * `PUT /rooms/{roomId}/send|state|redact/…`. Every route needs an access token.
 *
 * The API checks only what is cheap and certain (identifier syntax; the room exists, else 404;
 * the sender is joined for send, state and redact, else 403; the target's membership for kick,
 * unban and forget); the room's persister then authorizes every event against the room's
 * current state, and its refusals are 403 `M_FORBIDDEN` with the rule's reason.
 *
 * `forget` records nothing (there is no table for forgotten rooms): it is 400 `M_UNKNOWN` while
 * the user is joined, invited or knocking, else `{}`.
 */

const reasonField = { type: 'string', maxLength: 2048 } as const
const roomParams = { type: 'object', required: ['roomId'], properties: { roomId: { type: 'string', minLength: 1, maxLength: 2048 } } } as const
const optionalReasonBody = { type: 'object', properties: { reason: reasonField } } as const
const roomIdOrAliasParams = { type: 'object', required: ['roomIdOrAlias'], properties: { roomIdOrAlias: { type: 'string', minLength: 1, maxLength: 2048 } } } as const
const targetBody = { type: 'object', required: ['user_id'], properties: { user_id: { type: 'string', maxLength: 2048 }, reason: reasonField } } as const
const identifierParam = { type: 'string', minLength: 1, maxLength: maxIdentifierLength } as const

type RoomParams = { roomId: string }
type TargetBody = { user_id: string; reason?: string }

/**
 * The room write routes over an api process's room services.
 *
 * @example
 * const app = await buildApp(ctx, { plugins: [roomWriteRoutes(services)] })
 * await app.inject({ method: 'POST', url: '/_matrix/client/v3/createRoom', headers, payload: { name: 'Lobby' } })
 */
export function roomWriteRoutes(services: RoomServices): FastifyPluginAsync {
  return async (app) => {
    const { db, config } = app.myelin
    const serverName = config.server_name

    // Recent positive "joined" pre-checks, so a sender costs no lookup per send. Write routes
    // only: the persister authorizes every event against the room's current state, so a member
    // who left since still gets 403 (from the persister, with its reason); the pre-check only
    // answers non-members without a trip to the persister. Five minutes: with 10 s, 64 users
    // sending into 32 rooms made one send in eight look up its membership (e2e benchmark).
    const recentlyJoined = createTtlCache<true>({ ttlMs: 300_000, maxEntries: 100_000, clock: Date.now })
    const joinKey = (roomId: string, userId: string) => `${roomId}\u0000${userId}`

    /** Persists `events` in order through the room's persister; its refusals become Matrix errors. */
    async function send(roomId: string, events: readonly NewEvent[]): Promise<PersistedEvent[]> {
      try {
        const persisted = await services.sender.send({ requestId: randomUUID(), roomId, events })
        for (const sender of new Set(events.map((event) => event.sender))) app.myelin.presence.active(sender)
        await stopTypingOfDeparted(db, roomId, events, app.myelin.clock()).catch((err: unknown) =>
          app.myelin.log.warn({ err, roomId }, 'could not stop the typing of a member who left'),
        )
        return persisted
      } catch (err) {
        if (err instanceof RejectedEventError && err.code === 'ES_FORBIDDEN') throw forbidden(err.reason)
        if (err instanceof RejectedEventError && err.code === 'ES_ROOM_NOT_FOUND') throw notFound(`Unknown room ${roomId}`)
        throw err
      }
    }

    async function sendOne(roomId: string, event: NewEvent): Promise<string> {
      const [persisted] = await send(roomId, [event])
      if (persisted === undefined) throw new Error('the persister answered no event')
      return persisted.event_id
    }

    /**
     * `sendOne` of an event the client asked for directly (a message, state, a redaction), under
     * the message rate limit. A shadow-banned sender gets an event ID that names nothing (as
     * Synapse's), and nothing is stored.
     */
    async function sendAsClient(requester: Requester, roomId: string, event: NewEvent): Promise<string> {
      if (requester.shadowBanned) return `$${randomBytes(32).toString('base64url')}`
      await app.myelin.messages.take(event.sender)
      return sendOne(roomId, event)
    }

    /** The room ID of a path parameter; 400 when malformed, 404 when the room does not exist. */
    async function existingRoom(raw: string): Promise<string> {
      const roomId = checkRoomId(raw)
      if ((await getRoomHead(db, roomId)) === undefined) throw notFound(`Unknown room ${roomId}`)
      return roomId
    }

    /** `existingRoom` of a room ID, or of the room an alias names (404 when it names none). */
    async function existingRoomOrAlias(target: string): Promise<string> {
      return existingRoom(await roomIdOrAlias(db, target))
    }

    /** Like `existingRoom`, and 403 unless `userId` is joined to it. */
    async function joinedRoom(raw: string, userId: string): Promise<string> {
      const roomId = checkRoomId(raw)
      if (recentlyJoined.get(joinKey(roomId, userId))) return roomId
      // A joined member proves the room exists: the common case costs one lookup.
      if ((await currentMembership(db, roomId, userId)) === 'join') {
        recentlyJoined.set(joinKey(roomId, userId), true)
        return roomId
      }
      await existingRoom(roomId)
      throw forbidden(`${userId} is not in the room`)
    }

    /** A local user who exists (404 otherwise); users of other servers are 403 (no federation). */
    async function localUser(userId: string, action: string): Promise<string> {
      if (serverNameOf(userId) !== serverName) throw forbidden(`Cannot ${action} ${userId}: federation is not supported`)
      if ((await getUser(db, userId)) === undefined) throw notFound(`Unknown user ${userId}`)
      return userId
    }

    /** 403 when a server admin blocked the room (no local joins, knocks or invites). */
    async function notBlocked(roomId: string): Promise<string> {
      if ((await roomBlock(db, roomId)) !== undefined) throw forbidden('This room has been blocked on this server')
      return roomId
    }

    async function join(roomId: string, userId: string, reason: string | undefined): Promise<{ room_id: string }> {
      await notBlocked(roomId)
      const profile = (await getProfile(db, userId)) ?? {}
      await sendOne(roomId, member(userId, userId, 'join', reason, profileContent(profile)))
      return { room_id: roomId }
    }

    clientRoute<{ Body: CreateRoomBody }>(app, {
      method: 'POST',
      path: '/createRoom',
      schema: { body: createRoomBodySchema },
      handler: async (request) => {
        const { userId, shadowBanned } = await requireUser(request)
        const roomId = generateRoomId(serverName)
        const plan = planRoomCreation(roomId, userId, serverName, request.body, (await getProfile(db, userId)) ?? {})
        for (const invitee of plan.invitees) await localUser(invitee, 'invite')
        if (plan.alias !== undefined && (await getAlias(db, plan.alias)) !== undefined) {
          throw new MatrixError(400, 'M_ROOM_IN_USE', `Room alias ${plan.alias} is already taken`)
        }
        // A shadow-banned user gets the room, without its invites.
        await send(roomId, shadowBanned ? plan.events.filter((e) => !(e.type === 'm.room.member' && e.state_key !== userId)) : plan.events)
        if (plan.published) await setRoomPublished(db, roomId, true)
        if (plan.alias !== undefined && (await createAlias(db, plan.alias, roomId, userId)) === 'taken') {
          request.log.info({ roomId }, 'room alias taken while the room was created')
          throw new MatrixError(400, 'M_ROOM_IN_USE', `Room alias ${plan.alias} is already taken`)
        }
        return { room_id: roomId, ...(plan.alias !== undefined && { room_alias: plan.alias }) }
      },
    })

    clientRoute<{ Params: { roomIdOrAlias: string }; Body: { reason?: string } }>(app, {
      method: 'POST',
      path: '/join/:roomIdOrAlias',
      preValidation: emptyBodyAsObject,
      schema: { params: roomIdOrAliasParams, body: optionalReasonBody },
      handler: async (request) => {
        const { userId } = await requireUser(request)
        return join(await existingRoomOrAlias(request.params.roomIdOrAlias), userId, request.body.reason)
      },
    })

    // Knocking (room versions 7+): asks to be let into a room whose join rule is `knock`; the
    // room's moderators answer with an invite or a kick. The persister's auth rules refuse
    // other join rules, joined and banned users (403).
    clientRoute<{ Params: { roomIdOrAlias: string }; Body: { reason?: string } }>(app, {
      method: 'POST',
      path: '/knock/:roomIdOrAlias',
      preValidation: emptyBodyAsObject,
      schema: { params: roomIdOrAliasParams, body: optionalReasonBody },
      handler: async (request) => {
        const { userId } = await requireUser(request)
        const roomId = await notBlocked(await existingRoomOrAlias(request.params.roomIdOrAlias))
        const profile = (await getProfile(db, userId)) ?? {}
        await sendOne(roomId, member(userId, userId, 'knock', request.body.reason, profileContent(profile)))
        return { room_id: roomId }
      },
    })

    clientRoute<{ Params: RoomParams; Body: { reason?: string } }>(app, {
      method: 'POST',
      path: '/rooms/:roomId/join',
      preValidation: emptyBodyAsObject,
      schema: { params: roomParams, body: optionalReasonBody },
      handler: async (request) => {
        const { userId } = await requireUser(request)
        return join(await existingRoom(request.params.roomId), userId, request.body.reason)
      },
    })

    clientRoute<{ Params: RoomParams; Body: { reason?: string } }>(app, {
      method: 'POST',
      path: '/rooms/:roomId/leave',
      preValidation: emptyBodyAsObject,
      schema: { params: roomParams, body: optionalReasonBody },
      handler: async (request) => {
        const { userId } = await requireUser(request)
        const roomId = await existingRoom(request.params.roomId)
        await sendOne(roomId, member(userId, userId, 'leave', request.body.reason))
        return {}
      },
    })

    clientRoute<{ Params: RoomParams; Body: TargetBody }>(app, {
      method: 'POST',
      path: '/rooms/:roomId/invite',
      schema: { params: roomParams, body: targetBody },
      handler: async (request) => {
        const { userId, shadowBanned } = await requireUser(request)
        const target = checkUserId(request.body.user_id)
        const roomId = await notBlocked(await existingRoom(request.params.roomId))
        await localUser(target, 'invite')
        // A shadow-banned user's invites are answered and dropped.
        if (!shadowBanned) await sendOne(roomId, member(userId, target, 'invite', request.body.reason))
        return {}
      },
    })

    clientRoute<{ Params: RoomParams; Body: TargetBody }>(app, {
      method: 'POST',
      path: '/rooms/:roomId/kick',
      schema: { params: roomParams, body: targetBody },
      handler: async (request) => {
        const { userId } = await requireUser(request)
        const target = checkUserId(request.body.user_id)
        const roomId = await existingRoom(request.params.roomId)
        const membership = await currentMembership(db, roomId, target)
        if (membership !== 'join' && membership !== 'invite' && membership !== 'knock') throw forbidden(`${target} is not in the room`)
        await sendOne(roomId, member(userId, target, 'leave', request.body.reason))
        return {}
      },
    })

    clientRoute<{ Params: RoomParams; Body: TargetBody }>(app, {
      method: 'POST',
      path: '/rooms/:roomId/ban',
      schema: { params: roomParams, body: targetBody },
      handler: async (request) => {
        const { userId } = await requireUser(request)
        const target = checkUserId(request.body.user_id)
        const roomId = await existingRoom(request.params.roomId)
        await sendOne(roomId, member(userId, target, 'ban', request.body.reason))
        return {}
      },
    })

    clientRoute<{ Params: RoomParams; Body: TargetBody }>(app, {
      method: 'POST',
      path: '/rooms/:roomId/unban',
      schema: { params: roomParams, body: targetBody },
      handler: async (request) => {
        const { userId } = await requireUser(request)
        const target = checkUserId(request.body.user_id)
        const roomId = await existingRoom(request.params.roomId)
        if ((await currentMembership(db, roomId, target)) !== 'ban') throw forbidden(`${target} is not banned from the room`)
        await sendOne(roomId, member(userId, target, 'leave', request.body.reason))
        return {}
      },
    })

    clientRoute<{ Params: RoomParams }>(app, {
      method: 'POST',
      path: '/rooms/:roomId/forget',
      preValidation: emptyBodyAsObject,
      schema: { params: roomParams, body: { type: 'object' } },
      handler: async (request) => {
        const { userId } = await requireUser(request)
        const roomId = await existingRoom(request.params.roomId)
        const membership = await currentMembership(db, roomId, userId)
        if (membership === 'join' || membership === 'invite' || membership === 'knock') {
          throw new MatrixError(400, 'M_UNKNOWN', `${userId} is still in the room (membership: ${membership}); leave it first`)
        }
        return {}
      },
    })

    clientRoute<{ Params: RoomParams; Body: RoomUpgradeBody }>(app, {
      method: 'POST',
      path: '/rooms/:roomId/upgrade',
      schema: { params: roomParams, body: roomUpgradeBodySchema },
      handler: async (request) => {
        const { userId } = await requireUser(request)
        const oldRoomId = await joinedRoom(request.params.roomId, userId)
        // Upgrades are rare: the whole current state is read once, for the copied state and the bans.
        const state = await getCurrentState(db, oldRoomId)
        const [latest] = await getForwardExtremities(db, oldRoomId)
        if (latest === undefined) throw notFound(`Unknown room ${oldRoomId}`)
        const plan = planRoomUpgrade({
          oldRoomId,
          newRoomId: generateRoomId(serverName),
          user: userId,
          serverName,
          newVersion: request.body.new_version,
          lastEventId: latest.eventId,
          state: state.map(stateEventOf),
          profile: (await getProfile(db, userId)) ?? {},
        })
        const newRoomId = plan.tombstone.content['replacement_room'] as string
        await send(newRoomId, plan.creation.events)
        if (plan.restorePowerLevels !== undefined) await sendOne(newRoomId, plan.restorePowerLevels)
        if (await isRoomPublished(db, oldRoomId)) {
          await setRoomPublished(db, newRoomId, true)
          await setRoomPublished(db, oldRoomId, false)
        }
        const moved = await moveAliases(db, oldRoomId, newRoomId)
        await sendOne(oldRoomId, plan.tombstone)
        // What the old room keeps of its standing is best effort, as in Synapse: a user allowed
        // to tombstone may still lack the power to change the power levels or the alias there.
        const bestEffort = async (what: string, event: NewEvent) => {
          try {
            await sendOne(oldRoomId, event)
          } catch (err) {
            if (!(err instanceof MatrixError && err.status === 403)) throw err
            request.log.info({ roomId: oldRoomId, reason: err.message }, `room upgrade: could not ${what} in the old room`)
          }
        }
        if (plan.restrictOldRoom !== undefined) await bestEffort('restrict the power levels', plan.restrictOldRoom)
        const canonical = state.find((entry) => entry.type === 'm.room.canonical_alias' && entry.stateKey === '')
        if (canonical !== undefined && Object.keys(canonical.content).length > 0) {
          await bestEffort('remove the canonical alias', { type: 'm.room.canonical_alias', state_key: '', sender: userId, content: {} })
        }
        request.log.info({ oldRoomId, newRoomId, aliases: moved.length }, 'room upgraded')
        return { replacement_room: newRoomId }
      },
    })

    clientRoute<{ Params: RoomParams & { eventType: string; txnId: string }; Body: Record<string, unknown> }>(app, {
      method: 'PUT',
      path: '/rooms/:roomId/send/:eventType/:txnId',
      schema: {
        params: {
          type: 'object',
          required: ['roomId', 'eventType', 'txnId'],
          properties: { ...roomParams.properties, eventType: identifierParam, txnId: identifierParam },
        },
        body: { type: 'object' },
      },
      handler: async (request) => {
        const requester = await requireUser(request)
        const { userId, deviceId } = requester
        const { eventType, txnId } = request.params
        const roomId = await joinedRoom(request.params.roomId, userId)
        const eventId = await sendAsClient(requester, roomId, { type: eventType, sender: userId, content: request.body, txn: { deviceId, txnId } })
        return { event_id: eventId }
      },
    })

    for (const path of ['/rooms/:roomId/state/:eventType', '/rooms/:roomId/state/:eventType/:stateKey']) {
      clientRoute<{ Params: RoomParams & { eventType: string; stateKey?: string }; Body: Record<string, unknown> }>(app, {
        method: 'PUT',
        path,
        schema: {
          params: {
            type: 'object',
            required: ['roomId', 'eventType'],
            properties: { ...roomParams.properties, eventType: identifierParam, stateKey: { type: 'string', maxLength: maxIdentifierLength } },
          },
          body: { type: 'object' },
        },
        handler: async (request) => {
          const requester = await requireUser(request)
          const { userId } = requester
          const { eventType, stateKey = '' } = request.params
          // Membership through the state API is authorized by the persister alone (a join is not yet joined).
          const roomId = eventType === 'm.room.member' ? await existingRoom(request.params.roomId) : await joinedRoom(request.params.roomId, userId)
          // Membership changes are not messages (Synapse limits them apart).
          const event = { type: eventType, state_key: stateKey, sender: userId, content: request.body }
          const eventId = eventType === 'm.room.member' ? await sendOne(roomId, event) : await sendAsClient(requester, roomId, event)
          return { event_id: eventId }
        },
      })
    }

    clientRoute<{ Params: RoomParams & { eventId: string; txnId: string }; Body: { reason?: string } }>(app, {
      method: 'PUT',
      path: '/rooms/:roomId/redact/:eventId/:txnId',
      preValidation: emptyBodyAsObject,
      schema: {
        params: {
          type: 'object',
          required: ['roomId', 'eventId', 'txnId'],
          properties: { ...roomParams.properties, eventId: identifierParam, txnId: identifierParam },
        },
        body: optionalReasonBody,
      },
      handler: async (request) => {
        const requester = await requireUser(request)
        const { userId, deviceId } = requester
        const { eventId, txnId } = request.params
        const roomId = await joinedRoom(request.params.roomId, userId)
        const target = await getEvent(db, eventId)
        if (target === undefined || target.roomId !== roomId) throw notFound(`Unknown event ${eventId}`)
        const content = { redacts: eventId, ...(request.body.reason !== undefined && { reason: request.body.reason }) }
        const redaction = await sendAsClient(requester, roomId, { type: 'm.room.redaction', sender: userId, content, redacts: eventId, txn: { deviceId, txnId } })
        return { event_id: redaction }
      },
    })
  }
}

/** An m.room.member event of `sender` about `target`. */
function member(sender: string, target: string, membership: string, reason: string | undefined, extra: Record<string, string> = {}): NewEvent {
  return { type: 'm.room.member', state_key: target, sender, content: { membership, ...extra, ...(reason !== undefined && { reason }) } }
}
