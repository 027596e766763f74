import type { FastifyPluginAsync } from 'fastify'
import { spaceHierarchy } from '../../storage/space-hierarchy.js'
import { clientRoute } from '../client-route.js'
import { requireUser } from '../require-user.js'
import { checkRoomId } from '../room-ids.js'

/**
 * `GET /_matrix/client/v1/rooms/{roomId}/hierarchy` (`from`, `limit` (default 50, at most 100),
 * `max_depth`, `suggested_only`): the rooms of a space and its sub-spaces that the requester may
 * see (storage/space-hierarchy.ts). 403 `M_FORBIDDEN` when they may not see the space itself.
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
}
