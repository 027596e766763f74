import type { FastifyPluginAsync } from 'fastify'
import { clientRoute } from '../client-route.js'
import { forbidden } from '../errors.js'
import type { PresenceState } from '../presence-store.js'
import { requireUser } from '../require-user.js'

/**
 * `GET|PUT /presence/{userId}/status`, over the process-local presence store
 * (api/presence-store.ts). Only the user sets their own presence.
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
      await requireUser(request)
      return presence.get(request.params.userId)
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
      presence.set(userId, request.body.presence, request.body.status_msg)
      return {}
    },
  })
}
