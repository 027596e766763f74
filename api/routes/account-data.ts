import type { FastifyPluginAsync } from 'fastify'
import { getAccountData, setAccountData, updateAccountData } from '../../storage/account-data.js'
import { getPushRules } from '../../storage/push-rules.js'
import { clientRoute } from '../client-route.js'
import { forbidden, invalidParam, MatrixError, notFound } from '../errors.js'
import { requireUser } from '../require-user.js'

/**
 * Account data, global and per room:
 * `GET|PUT /user/{userId}/account_data/{type}` and
 * `GET|PUT /user/{userId}/rooms/{roomId}/account_data/{type}`.
 * Only the requester's own user ID (403 otherwise); GET of an absent type is 404 `M_NOT_FOUND`.
 * Server-managed types cannot be PUT (405 `M_BAD_JSON`, as the spec says): global
 * `m.push_rules` (use /pushrules; GET returns the rule set) and per-room `m.fully_read`
 * (use /read_markers). Every PUT advances the account data stream (storage/account-data.ts).
 *
 * Room tags (`GET /user/{userId}/rooms/{roomId}/tags`, `PUT|DELETE …/tags/{tag}`) live in the
 * room's `m.tag` account data (`{tags: {name: {order?}}}`), changed in one transaction each so
 * that concurrent tag changes all land; sync shows them as that account data.
 */

const name = { type: 'string', minLength: 1, maxLength: 255 } as const
const contentSchema = { type: 'object' } as const

function serverManaged(type: string): MatrixError {
  return new MatrixError(405, 'M_BAD_JSON', `Cannot set ${type} through this API`)
}

function checkOwn(requesterId: string, userId: string): void {
  if (requesterId !== userId) throw forbidden('Cannot access account data of other users')
}

function checkRoomId(roomId: string): void {
  if (!roomId.startsWith('!') || !roomId.includes(':')) throw invalidParam(`${JSON.stringify(roomId)} is not a room ID`)
}

export const accountDataRoutes: FastifyPluginAsync = async (app) => {
  const { db } = app.myelin
  const globalParams = { type: 'object', required: ['userId', 'type'], properties: { userId: name, type: name } } as const
  const roomParams = { type: 'object', required: ['userId', 'roomId', 'type'], properties: { userId: name, roomId: name, type: name } } as const

  clientRoute<{ Params: { userId: string; type: string } }>(app, {
    method: 'GET',
    path: '/user/:userId/account_data/:type',
    schema: { params: globalParams },
    handler: async (request) => {
      const { userId } = await requireUser(request)
      checkOwn(userId, request.params.userId)
      if (request.params.type === 'm.push_rules') return getPushRules(db, userId)
      const content = await getAccountData(db, userId, request.params.type)
      if (!content) throw notFound('Account data not found')
      return content
    },
  })

  clientRoute<{ Params: { userId: string; type: string }; Body: Record<string, unknown> }>(app, {
    method: 'PUT',
    path: '/user/:userId/account_data/:type',
    schema: { params: globalParams, body: contentSchema },
    handler: async (request) => {
      const { userId } = await requireUser(request)
      checkOwn(userId, request.params.userId)
      if (request.params.type === 'm.push_rules') throw serverManaged('m.push_rules')
      await setAccountData(db, { userId, type: request.params.type, content: request.body })
      return {}
    },
  })

  clientRoute<{ Params: { userId: string; roomId: string; type: string } }>(app, {
    method: 'GET',
    path: '/user/:userId/rooms/:roomId/account_data/:type',
    schema: { params: roomParams },
    handler: async (request) => {
      const { userId } = await requireUser(request)
      checkOwn(userId, request.params.userId)
      checkRoomId(request.params.roomId)
      const content = await getAccountData(db, userId, request.params.type, request.params.roomId)
      if (!content) throw notFound('Room account data not found')
      return content
    },
  })

  clientRoute<{ Params: { userId: string; roomId: string; type: string }; Body: Record<string, unknown> }>(app, {
    method: 'PUT',
    path: '/user/:userId/rooms/:roomId/account_data/:type',
    schema: { params: roomParams, body: contentSchema },
    handler: async (request) => {
      const { userId } = await requireUser(request)
      checkOwn(userId, request.params.userId)
      checkRoomId(request.params.roomId)
      if (request.params.type === 'm.fully_read') throw serverManaged('m.fully_read')
      await setAccountData(db, { userId, roomId: request.params.roomId, type: request.params.type, content: request.body })
      return {}
    },
  })

  const tagsParams = { type: 'object', required: ['userId', 'roomId'], properties: { userId: name, roomId: name } } as const
  const tagParams = { type: 'object', required: ['userId', 'roomId', 'tag'], properties: { userId: name, roomId: name, tag: name } } as const
  /** The room's tags of `userId` checked against the request (own user, a room ID). */
  const tagRequest = async (request: { params: { userId: string; roomId: string } } & Parameters<typeof requireUser>[0]) => {
    const { userId } = await requireUser(request)
    checkOwn(userId, request.params.userId)
    checkRoomId(request.params.roomId)
    return { userId, roomId: request.params.roomId, type: 'm.tag' }
  }
  const tagsOf = (content: Record<string, unknown> | undefined): Record<string, unknown> => {
    const tags = content?.['tags']
    return tags !== null && typeof tags === 'object' && !Array.isArray(tags) ? (tags as Record<string, unknown>) : {}
  }

  clientRoute<{ Params: { userId: string; roomId: string } }>(app, {
    method: 'GET',
    path: '/user/:userId/rooms/:roomId/tags',
    schema: { params: tagsParams },
    handler: async (request) => {
      const key = await tagRequest(request)
      return { tags: tagsOf(await getAccountData(db, key.userId, key.type, key.roomId)) }
    },
  })

  clientRoute<{ Params: { userId: string; roomId: string; tag: string }; Body: Record<string, unknown> }>(app, {
    method: 'PUT',
    path: '/user/:userId/rooms/:roomId/tags/:tag',
    // Spec: `order` is a number between 0 and 1; other fields are kept as sent.
    schema: { params: tagParams, body: { type: 'object', properties: { order: { type: 'number', minimum: 0, maximum: 1 } } } },
    handler: async (request) => {
      const key = await tagRequest(request)
      await updateAccountData(db, key, (current) => ({ ...current, tags: { ...tagsOf(current), [request.params.tag]: request.body } }))
      return {}
    },
  })

  clientRoute<{ Params: { userId: string; roomId: string; tag: string } }>(app, {
    method: 'DELETE',
    path: '/user/:userId/rooms/:roomId/tags/:tag',
    schema: { params: tagParams },
    handler: async (request) => {
      const key = await tagRequest(request)
      await updateAccountData(db, key, (current) => {
        const { [request.params.tag]: _removed, ...tags } = tagsOf(current)
        return { ...current, tags }
      })
      return {}
    },
  })
}
