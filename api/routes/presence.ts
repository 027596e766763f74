import type { FastifyPluginAsync } from 'fastify'
import { clientRoute } from '../client-route.js'
import { forbidden } from '../errors.js'
import type { PresenceState } from '../presence-service.js'
import { requireUser } from '../require-user.js'
import { checkUserId } from '../room-ids.js'

/**
 * `GET|PUT /presence/{userId}/status`, over the deployment's shared presence
 * (api/presence-service.ts). Only the user sets their own presence; another user's is readable
 * by those who share a joined room with them (403 otherwise, as Synapse answers).
 */

const params = { type: 'object', required: ['userId'], properties: { userId: { type: 'string', minLength: 1, maxLength: 255 } } } as const

export const presenceRoutes: FastifyPluginAsync = async (app) => {
  const { presence } = app.myelin

  clientRoute<{ Params: { userId: string } }>(app, {
    method: 'GET',
    path: '/presence/:userId/status',
    versions: ['v3', 'r0', 'api/v1'],
    schema: { params },
    handler: async (request) => {
      const { userId: observer } = await requireUser(request)
      const status = await presence.statusOf(checkUserId(request.params.userId), observer)
      if (status === undefined) throw forbidden('You are not allowed to see their presence')
      return status
    },
  })

  clientRoute<{ Params: { userId: string }; Body: { presence: PresenceState; status_msg?: string } }>(app, {
    method: 'PUT',
    path: '/presence/:userId/status',
    versions: ['v3', 'r0', 'api/v1'],
    schema: {
      params,
      body: {
        type: 'object',
        required: ['presence'],
        properties: { presence: { type: 'string', enum: ['online', 'offline', 'unavailable'] }, status_msg: { type: 'string', maxLength: 1000 } },
      },
    },
    handler: async (request) => {
      const { userId } = await requireUser(request)
      if (request.params.userId !== userId) throw forbidden('Cannot set presence of other users')
      await presence.set(userId, request.body.presence, request.body.status_msg)
      return {}
    },
  })
}
