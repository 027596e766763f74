import type { FastifyPluginAsync } from 'fastify'
import { createFilter, getFilter } from '../../storage/filters.js'
import { clientRoute } from '../client-route.js'
import { forbidden, notFound } from '../errors.js'
import { filterSchema } from '../filter-schema.js'
import { requireUser } from '../require-user.js'

/**
 * `POST /user/{userId}/filter` (→ `{filter_id}`, a decimal string) and
 * `GET /user/{userId}/filter/{filterId}` (404 `M_NOT_FOUND` when absent). Both only for the
 * requester's own user ID (403 otherwise).
 */

const userParams = { type: 'string', minLength: 1, maxLength: 255 } as const

export const filterRoutes: FastifyPluginAsync = async (app) => {
  const { db } = app.myelin

  clientRoute<{ Params: { userId: string }; Body: Record<string, unknown> }>(app, {
    method: 'POST',
    path: '/user/:userId/filter',
    schema: { params: { type: 'object', required: ['userId'], properties: { userId: userParams } }, body: filterSchema },
    handler: async (request) => {
      const { userId } = await requireUser(request)
      if (request.params.userId !== userId) throw forbidden('Cannot create filters for other users')
      return { filter_id: await createFilter(db, userId, request.body) }
    },
  })

  clientRoute<{ Params: { userId: string; filterId: string } }>(app, {
    method: 'GET',
    path: '/user/:userId/filter/:filterId',
    schema: {
      params: {
        type: 'object',
        required: ['userId', 'filterId'],
        properties: { userId: userParams, filterId: { type: 'string', minLength: 1, maxLength: 255 } },
      },
    },
    handler: async (request) => {
      const { userId } = await requireUser(request)
      if (request.params.userId !== userId) throw forbidden('Cannot get filters for other users')
      const filter = await getFilter(db, userId, request.params.filterId)
      if (!filter) throw notFound('No such filter')
      return filter
    },
  })
}
