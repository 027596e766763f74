import type { FastifyPluginAsync, FastifyRequest } from 'fastify'
import { roomSummaries, spaceHierarchy } from '../../storage/space-hierarchy.js'
import { clientRoute } from '../client-route.js'
import { notFound } from '../errors.js'
import { accessTokenOf, requireUser } from '../require-user.js'
import { checkRoomId, roomIdOrAlias } from '../room-ids.js'

/**
 * `GET /_matrix/client/v1/rooms/{roomId}/hierarchy` (`from`, `limit` (default 50, at most 100),
 * `max_depth`, `suggested_only`): the rooms of a space and its sub-spaces that the requester may
 * see (storage/space-hierarchy.ts). 403 `M_FORBIDDEN` when they may not see the space itself.
 *
 * `GET /_matrix/client/v1/room_summary/{roomIdOrAlias}` (spec v1.15, MSC3266; also at Synapse's
 * unstable `…/unstable/im.nheko.summary/rooms/{roomIdOrAlias}/summary`): a room's preview (name,
 * topic, avatar, alias, members, join rule, type, version, encryption, the requester's
 * membership), what clients show before joining or knocking. The access token is optional; the
 * same rooms as in the hierarchy may be summarized, and any other answers 404 `M_NOT_FOUND`,
 * like an unknown room, so that the answer reveals nothing.
 */

/** Query parameters arrive as strings; the schema checks their shapes. */
interface Query {
  from?: string
  limit?: string
  max_depth?: string
  suggested_only?: 'true' | 'false'
}

export const spaceRoutes: FastifyPluginAsync = async (app) => {
  const { db } = app.myelin

  clientRoute<{ Params: { roomId: string }; Querystring: Query }>(app, {
    method: 'GET',
    path: '/rooms/:roomId/hierarchy',
    versions: ['v1'],
    schema: {
      params: { type: 'object', required: ['roomId'], properties: { roomId: { type: 'string', minLength: 1, maxLength: 255 } } },
      querystring: {
        type: 'object',
        properties: {
          from: { type: 'string', maxLength: 64 },
          limit: { type: 'string', pattern: '^[1-9][0-9]{0,5}$' },
          max_depth: { type: 'string', pattern: '^[0-9]{1,6}$' },
          suggested_only: { type: 'string', enum: ['true', 'false'] },
        },
      },
    },
    handler: async (request) => {
      const { userId } = await requireUser(request)
      const { roomId } = request.params
      checkRoomId(roomId)
      const q = request.query
      // Larger pages are cut to 100 rooms (the spec lets servers cap them).
      return spaceHierarchy(db, {
        roomId,
        userId,
        limit: Math.min(q.limit === undefined ? 50 : Number(q.limit), 100),
        maxDepth: q.max_depth === undefined ? undefined : Number(q.max_depth),
        suggestedOnly: q.suggested_only === 'true',
        from: q.from,
      })
    },
  })

  const summaryHandler = async (request: FastifyRequest<{ Params: { roomIdOrAlias: string } }>) => {
    // Optional authentication: without a token the requester sees what anyone may see.
    const userId = accessTokenOf(request) === undefined ? undefined : (await requireUser(request)).userId
    const roomId = await roomIdOrAlias(db, request.params.roomIdOrAlias)
    const summary = (await roomSummaries(db, [roomId], userId)).get(roomId)
    if (summary === undefined || !summary.accessible) throw notFound('Room not found or not accessible')
    const { children_state: _children, ...room } = summary.room
    return { ...room, ...(summary.membership !== undefined && { membership: summary.membership }) }
  }
  const summaryParams = { type: 'object', required: ['roomIdOrAlias'], properties: { roomIdOrAlias: { type: 'string', minLength: 1, maxLength: 255 } } } as const
  clientRoute<{ Params: { roomIdOrAlias: string } }>(app, { method: 'GET', path: '/room_summary/:roomIdOrAlias', versions: ['v1'], schema: { params: summaryParams }, handler: summaryHandler })
  clientRoute<{ Params: { roomIdOrAlias: string } }>(app, {
    method: 'GET',
    path: '/im.nheko.summary/rooms/:roomIdOrAlias/summary',
    versions: ['unstable'],
    schema: { params: summaryParams },
    handler: summaryHandler,
  })
}
