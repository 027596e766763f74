import type { FastifyPluginAsync } from 'fastify'
import { maxSearchLimit, maxSearchTermLength, searchUserDirectory } from '../../storage/user-directory.js'
import { clientRoute } from '../client-route.js'
import { requireUser } from '../require-user.js'

/**
 * `POST /user_directory/search` (client-server API "User directory"): `search_term` (required,
 * at most 256 characters) and `limit` (default 10, at most 50). Answers the users the requester
 * shares a room with and the members of public rooms whose user ID or display name contains
 * every word of the term (storage/user-directory.ts), with `limited` when there were more.
 */

const searchBody = {
  type: 'object',
  required: ['search_term'],
  properties: {
    search_term: { type: 'string', maxLength: maxSearchTermLength },
    limit: { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER },
  },
} as const

export const userDirectoryRoutes: FastifyPluginAsync = async (app) => {
  const { db } = app.myelin
  clientRoute<{ Body: { search_term: string; limit?: number } }>(app, {
    method: 'POST',
    path: '/user_directory/search',
    schema: { body: searchBody },
    handler: async (request) => {
      const { userId } = await requireUser(request)
      const limit = Math.min(request.body.limit ?? 10, maxSearchLimit)
      return searchUserDirectory(db, userId, request.body.search_term, limit)
    },
  })
}
