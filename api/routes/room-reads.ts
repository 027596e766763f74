import type { FastifyPluginAsync } from 'fastify'
import {
  eventAtTimestamp,
  eventContext,
  eventForUser,
  joinedMembers,
  joinedRooms,
  paginateMessages,
  threadsPage,
  parseEventFilter,
  roomMembers,
  roomStateForUser,
  stateEventForUser,
  type Viewer,
} from '../../storage/room-reads.js'
import { parseRoomStreamToken, type RoomStreamToken } from '../../storage/streams/room-stream-token.js'
import { parseSyncToken } from '../../storage/sync.js'
import { clientRoute } from '../client-route.js'
import { invalidParam, notFound } from '../errors.js'
import { filterSchema } from '../filter-schema.js'
import { requireUser } from '../require-user.js'
import type { RoomServices } from '../room-services.js'
import { filterParam, sinceWaitMs, type JsonSchema } from './sync.js'

/**
 * Room reads of the client-server API (ARCHITECTURE §7), over storage/room-reads.ts:
 * `GET /rooms/{roomId}/state[/{type}[/{stateKey}]]`, `/rooms/{roomId}/event/{eventId}`,
 * `/rooms/{roomId}/messages`, `/rooms/{roomId}/context/{eventId}`, `/rooms/{roomId}/members`,
 * `/rooms/{roomId}/joined_members`, `/joined_rooms`, `/v1/rooms/{roomId}/timestamp_to_event`.
 *
 * Every read is bounded by this process's tracker token. A token a client passes (`from`, `to`,
 * `at`: a pagination token, or a sync `next_batch`) is clamped when it is from the future and
 * waited for (at most `sinceWaitMs`), so a read on a lagging worker does not miss what the
 * client already saw elsewhere (ARCHITECTURE §9, Synapse #19647). Malformed tokens are 400
 * `M_INVALID_PARAM`; rooms the user may not read 403 `M_FORBIDDEN`; unknown rooms, events and
 * state 404 `M_NOT_FOUND`.
 */

/** Default and largest page of `/messages` and `/context`. */
const defaultLimit = 10
const maxLimit = 1000

const id = { type: 'string', minLength: 1, maxLength: 2048 } as const
const limitParam = { type: 'string', pattern: '^[0-9]{1,9}$' } as const
const tokenParam = { type: 'string', maxLength: 4000 } as const
const roomEventFilterSchema = filterSchema.properties.room.properties.timeline as JsonSchema

function parseLimit(text: string | undefined): number {
  return text === undefined ? defaultLimit : Math.min(Number(text), maxLimit)
}

function checkRoomId(roomId: string): void {
  if (!roomId.startsWith('!')) throw invalidParam(`${JSON.stringify(roomId.slice(0, 80))} is not a room ID`)
}

/**
 * The room reads over an api process's room services.
 *
 * @example
 * const app = await buildApp(ctx, { plugins: [roomReadRoutes(services)] })
 */
export function roomReadRoutes(services: RoomServices): FastifyPluginAsync {
  const { tracker } = services

  /** A client token, clamped and waited for (bounded); a sync token counts by its room part. */
  const clientToken = async (text: string): Promise<RoomStreamToken> => {
    const token = await tracker.clamp(text.includes('_') ? parseSyncToken(text).room : parseRoomStreamToken(text))
    await tracker.waitFor(token, sinceWaitMs)
    return token
  }

  /** The paging parameters of `/messages` and `/relations`: direction, tokens, limit. */
  const pageParams = async (q: { dir?: 'b' | 'f'; from?: string; to?: string; limit?: string }) => {
    const from = q.from === undefined || q.from === '' ? undefined : await clientToken(q.from)
    const to = q.to === undefined || q.to === '' ? undefined : parseRoomStreamToken(q.to)
    return { dir: q.dir ?? 'b', ...(from && { from }), ...(to && { to }), limit: parseLimit(q.limit) }
  }

  return async (app) => {
    const { db, clock } = app.myelin
    const viewerOf = async (request: Parameters<typeof requireUser>[0]): Promise<Viewer> => {
      const { userId, deviceId } = await requireUser(request)
      return { userId, deviceId }
    }

    clientRoute<{ Params: { roomId: string } }>(app, {
      method: 'GET',
      path: '/rooms/:roomId/state',
      schema: { params: { type: 'object', required: ['roomId'], properties: { roomId: id } } },
      handler: async (request) => {
        const viewer = await viewerOf(request)
        checkRoomId(request.params.roomId)
        return roomStateForUser(db, request.params.roomId, viewer, tracker.currentToken(), clock())
      },
    })

    for (const path of ['/rooms/:roomId/state/:type', '/rooms/:roomId/state/:type/:stateKey']) {
      clientRoute<{ Params: { roomId: string; type: string; stateKey?: string } }>(app, {
        method: 'GET',
        path,
        schema: { params: { type: 'object', required: ['roomId', 'type'], properties: { roomId: id, type: id, stateKey: { type: 'string', maxLength: 2048 } } } },
        handler: async (request) => {
          const viewer = await viewerOf(request)
          const { roomId, type, stateKey = '' } = request.params
          checkRoomId(roomId)
          return stateEventForUser(db, roomId, viewer, type, stateKey, tracker.currentToken())
        },
      })
    }

    clientRoute<{ Params: { roomId: string; eventId: string } }>(app, {
      method: 'GET',
      path: '/rooms/:roomId/event/:eventId',
      schema: { params: { type: 'object', required: ['roomId', 'eventId'], properties: { roomId: id, eventId: id } } },
      handler: async (request) => {
        const viewer = await viewerOf(request)
        checkRoomId(request.params.roomId)
        return eventForUser(db, request.params.roomId, request.params.eventId, viewer, tracker.currentToken(), clock())
      },
    })

    clientRoute<{ Params: { roomId: string }; Querystring: { dir?: 'b' | 'f'; from?: string; to?: string; limit?: string; filter?: string } }>(app, {
      method: 'GET',
      path: '/rooms/:roomId/messages',
      schema: {
        params: { type: 'object', required: ['roomId'], properties: { roomId: id } },
        querystring: {
          type: 'object',
          properties: { dir: { type: 'string', enum: ['b', 'f'] }, from: tokenParam, to: tokenParam, limit: limitParam, filter: { type: 'string', maxLength: 20_000 } },
        },
      },
      handler: async (request) => {
        const viewer = await viewerOf(request)
        const { roomId } = request.params
        checkRoomId(roomId)
        const q = request.query
        const filter = parseEventFilter(await filterParam(db, viewer.userId, q.filter, roomEventFilterSchema))
        return paginateMessages(db, {
          roomId,
          viewer,
          ...(await pageParams(q)),
          filter,
          upTo: tracker.currentToken(),
          now: clock(),
        })
      },
    })

    const relationPaths = ['/rooms/:roomId/relations/:eventId', '/rooms/:roomId/relations/:eventId/:relType', '/rooms/:roomId/relations/:eventId/:relType/:eventType']
    for (const path of relationPaths) {
      clientRoute<{
        Params: { roomId: string; eventId: string; relType?: string; eventType?: string }
        Querystring: { dir?: 'b' | 'f'; from?: string; to?: string; limit?: string; recurse?: string }
      }>(app, {
        method: 'GET',
        path,
        versions: ['v1'],
        schema: {
          params: { type: 'object', required: ['roomId', 'eventId'], properties: { roomId: id, eventId: id, relType: id, eventType: id } },
          querystring: {
            type: 'object',
            properties: { dir: { type: 'string', enum: ['b', 'f'] }, from: tokenParam, to: tokenParam, limit: limitParam, recurse: { type: 'string', enum: ['true', 'false'] } },
          },
        },
        handler: async (request) => {
          const viewer = await viewerOf(request)
          const { roomId, eventId, relType, eventType } = request.params
          checkRoomId(roomId)
          const q = request.query
          const upTo = tracker.currentToken()
          // The parent must be an event the viewer may see (404 otherwise, as Synapse).
          await eventForUser(db, roomId, eventId, viewer, upTo, clock())
          const params = await pageParams(q)
          const page = await paginateMessages(db, {
            roomId,
            viewer,
            ...params,
            ...(eventType !== undefined && { filter: { types: [eventType], notTypes: [], notSenders: [] } }),
            relatedTo: { eventId, ...(relType !== undefined && { relType }) },
            upTo,
            now: clock(),
          })
          return { chunk: page.chunk, ...(page.end !== undefined && { next_batch: page.end }), ...(params.from && { prev_batch: params.from.toString() }) }
        },
      })
    }

    clientRoute<{ Params: { roomId: string }; Querystring: { ts: string; dir: 'b' | 'f' } }>(app, {
      method: 'GET',
      path: '/rooms/:roomId/timestamp_to_event',
      versions: ['v1'],
      schema: {
        params: { type: 'object', required: ['roomId'], properties: { roomId: id } },
        querystring: { type: 'object', required: ['ts', 'dir'], properties: { ts: { type: 'string', pattern: '^[0-9]{1,15}$' }, dir: { type: 'string', enum: ['b', 'f'] } } },
      },
      handler: async (request) => {
        const viewer = await viewerOf(request)
        const { roomId } = request.params
        checkRoomId(roomId)
        const found = await eventAtTimestamp(db, { roomId, viewer, ts: Number(request.query.ts), dir: request.query.dir, upTo: tracker.currentToken() })
        if (found === undefined) throw notFound(`No event found ${request.query.dir === 'f' ? 'after' : 'before'} ${request.query.ts} in ${roomId}`)
        return found
      },
    })

    clientRoute<{ Params: { roomId: string }; Querystring: { include?: 'all' | 'participated'; from?: string; limit?: string } }>(app, {
      method: 'GET',
      path: '/rooms/:roomId/threads',
      versions: ['v1'],
      schema: {
        params: { type: 'object', required: ['roomId'], properties: { roomId: id } },
        querystring: {
          type: 'object',
          properties: { include: { type: 'string', enum: ['all', 'participated'] }, from: { type: 'string', pattern: '^-?[0-9]{1,18}$' }, limit: limitParam },
        },
      },
      handler: async (request) => {
        const viewer = await viewerOf(request)
        const { roomId } = request.params
        checkRoomId(roomId)
        const q = request.query
        return threadsPage(db, {
          roomId,
          viewer,
          participated: q.include === 'participated',
          ...(q.from !== undefined && { before: BigInt(q.from) }),
          limit: parseLimit(q.limit),
          upTo: tracker.currentToken(),
          now: clock(),
        })
      },
    })

    clientRoute<{ Params: { roomId: string; eventId: string }; Querystring: { limit?: string; filter?: string } }>(app, {
      method: 'GET',
      path: '/rooms/:roomId/context/:eventId',
      schema: {
        params: { type: 'object', required: ['roomId', 'eventId'], properties: { roomId: id, eventId: id } },
        querystring: { type: 'object', properties: { limit: limitParam, filter: { type: 'string', maxLength: 20_000 } } },
      },
      handler: async (request) => {
        const viewer = await viewerOf(request)
        const { roomId, eventId } = request.params
        checkRoomId(roomId)
        const filter = parseEventFilter(await filterParam(db, viewer.userId, request.query.filter, roomEventFilterSchema))
        return eventContext(db, { roomId, eventId, viewer, limit: parseLimit(request.query.limit), filter, upTo: tracker.currentToken(), now: clock() })
      },
    })

    const membership = { type: 'string', enum: ['join', 'invite', 'knock', 'leave', 'ban'] } as const
    clientRoute<{ Params: { roomId: string }; Querystring: { at?: string; membership?: string; not_membership?: string } }>(app, {
      method: 'GET',
      path: '/rooms/:roomId/members',
      schema: {
        params: { type: 'object', required: ['roomId'], properties: { roomId: id } },
        querystring: { type: 'object', properties: { at: tokenParam, membership, not_membership: membership } },
      },
      handler: async (request) => {
        const viewer = await viewerOf(request)
        const { roomId } = request.params
        checkRoomId(roomId)
        const q = request.query
        const at = q.at === undefined || q.at === '' ? undefined : await clientToken(q.at)
        const chunk = await roomMembers(db, roomId, viewer, {
          ...(at && { at }),
          ...(q.membership !== undefined && { membership: q.membership }),
          ...(q.not_membership !== undefined && { notMembership: q.not_membership }),
          upTo: tracker.currentToken(),
          now: clock(),
        })
        return { chunk }
      },
    })

    clientRoute<{ Params: { roomId: string } }>(app, {
      method: 'GET',
      path: '/rooms/:roomId/joined_members',
      schema: { params: { type: 'object', required: ['roomId'], properties: { roomId: id } } },
      handler: async (request) => {
        const { userId } = await requireUser(request)
        checkRoomId(request.params.roomId)
        return { joined: await joinedMembers(db, request.params.roomId, userId) }
      },
    })

    clientRoute(app, {
      method: 'GET',
      path: '/joined_rooms',
      schema: {},
      handler: async (request) => {
        const { userId } = await requireUser(request)
        return { joined_rooms: await joinedRooms(db, userId) }
      },
    })
  }
}
