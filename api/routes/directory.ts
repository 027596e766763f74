import type { FastifyPluginAsync } from 'fastify'
import { powerLevels, roomStateOf } from '../../persisters/auth-rules.js'
import { getRoomHead } from '../../storage/events/event-store.js'
import { createAlias, deleteAlias, getAlias, roomAliases } from '../../storage/room-aliases.js'
import { isRoomPublished, publicRooms, setRoomPublished } from '../../storage/room-directory.js'
import { currentMembership, getStateEntries } from '../../storage/state-entries.js'
import { clientRoute } from '../client-route.js'
import { forbidden, invalidParam, MatrixError, notFound } from '../errors.js'
import { requireUser } from '../require-user.js'
import { checkRoomAlias, checkRoomId, serverNameOf } from '../room-ids.js'
import type { RoomServices } from '../room-services.js'

/**
 * The room directory: aliases (`GET|PUT|DELETE /directory/room/{roomAlias}`,
 * `GET /rooms/{roomId}/aliases`), the published room list (`GET|PUT
 * /directory/list/room/{roomId}`) and `GET|POST /publicRooms` (POST filters by `filter.generic_search_term`).
 *
 * As in the spec (and Synapse), resolving an alias and reading a room's directory visibility
 * need no access token; everything else does (`/publicRooms` too, Synapse's default).
 * Permissions follow Synapse: any member may add an alias of this server to their room; the
 * alias's creator, or a member whose power level allows m.room.canonical_alias, may delete it;
 * publishing needs that same level. Deleting an alias leaves the room's m.room.canonical_alias
 * event as it is.
 */

/** Most rooms per `/publicRooms` page. */
export const maxPublicRoomsLimit = 500
const defaultPublicRoomsLimit = 100

const aliasParams = { type: 'object', required: ['roomAlias'], properties: { roomAlias: { type: 'string', minLength: 1, maxLength: 2048 } } } as const
const roomParams = { type: 'object', required: ['roomId'], properties: { roomId: { type: 'string', minLength: 1, maxLength: 2048 } } } as const

/**
 * The directory routes over an api process's room services.
 *
 * @example
 * const app = await buildApp(ctx, { plugins: [directoryRoutes(services)] })
 */
export function directoryRoutes(_services: RoomServices): FastifyPluginAsync {
  return async (app) => {
    const { db, config } = app.myelin
    const serverName = config.server_name

    async function existingRoom(raw: string): Promise<string> {
      const roomId = checkRoomId(raw)
      if ((await getRoomHead(db, roomId)) === undefined) throw notFound(`Unknown room ${roomId}`)
      return roomId
    }

    async function requireJoined(roomId: string, userId: string): Promise<void> {
      if ((await currentMembership(db, roomId, userId)) !== 'join') throw forbidden(`${userId} is not in the room`)
    }

    /** Whether `userId` is joined to `roomId` with the power level to send m.room.canonical_alias. */
    async function mayEditDirectory(roomId: string, userId: string): Promise<boolean> {
      const entries = await getStateEntries(db, [roomId], [
        { type: 'm.room.create', stateKey: '' },
        { type: 'm.room.power_levels', stateKey: '' },
        { type: 'm.room.member', stateKey: userId },
      ])
      const state = roomStateOf(entries)
      if (entries.find((e) => e.type === 'm.room.member')?.membership !== 'join') return false
      const levels = powerLevels(state)
      return levels.user(userId) >= levels.required('m.room.canonical_alias', true)
    }

    function localAlias(raw: string): string {
      const alias = checkRoomAlias(raw)
      if (serverNameOf(alias) !== serverName) throw invalidParam(`Room alias ${alias} is not of this server (${serverName})`)
      return alias
    }

    clientRoute<{ Params: { roomAlias: string } }>(app, {
      method: 'GET',
      path: '/directory/room/:roomAlias',
      schema: { params: aliasParams },
      handler: async (request) => {
        const alias = checkRoomAlias(request.params.roomAlias)
        const mapping = await getAlias(db, alias)
        if (mapping === undefined) throw notFound(`Room alias ${alias} not found`)
        return { room_id: mapping.roomId, servers: [serverName] }
      },
    })

    clientRoute<{ Params: { roomAlias: string }; Body: { room_id: string } }>(app, {
      method: 'PUT',
      path: '/directory/room/:roomAlias',
      schema: { params: aliasParams, body: { type: 'object', required: ['room_id'], properties: { room_id: { type: 'string', maxLength: 2048 } } } },
      handler: async (request) => {
        const { userId } = await requireUser(request)
        const alias = localAlias(request.params.roomAlias)
        const roomId = await existingRoom(request.body.room_id)
        await requireJoined(roomId, userId)
        if ((await createAlias(db, alias, roomId, userId)) === 'taken') throw new MatrixError(409, 'M_UNKNOWN', `Room alias ${alias} already exists`)
        return {}
      },
    })

    clientRoute<{ Params: { roomAlias: string } }>(app, {
      method: 'DELETE',
      path: '/directory/room/:roomAlias',
      schema: { params: aliasParams },
      handler: async (request) => {
        const { userId } = await requireUser(request)
        const alias = checkRoomAlias(request.params.roomAlias)
        const mapping = await getAlias(db, alias)
        if (mapping === undefined) throw notFound(`Room alias ${alias} not found`)
        if (mapping.creator !== userId && !(await mayEditDirectory(mapping.roomId, userId))) {
          throw forbidden('You may not delete this alias: you did not create it and your power level does not allow m.room.canonical_alias')
        }
        await deleteAlias(db, alias)
        return {}
      },
    })

    clientRoute<{ Params: { roomId: string } }>(app, {
      method: 'GET',
      path: '/rooms/:roomId/aliases',
      schema: { params: roomParams },
      handler: async (request) => {
        const { userId } = await requireUser(request)
        const roomId = await existingRoom(request.params.roomId)
        await requireJoined(roomId, userId)
        return { aliases: await roomAliases(db, roomId) }
      },
    })

    clientRoute<{ Params: { roomId: string } }>(app, {
      method: 'GET',
      path: '/directory/list/room/:roomId',
      schema: { params: roomParams },
      handler: async (request) => {
        const roomId = checkRoomId(request.params.roomId)
        const published = await isRoomPublished(db, roomId)
        if (published === undefined) throw notFound(`Unknown room ${roomId}`)
        return { visibility: published ? 'public' : 'private' }
      },
    })

    clientRoute<{ Params: { roomId: string }; Body: { visibility?: 'public' | 'private' } }>(app, {
      method: 'PUT',
      path: '/directory/list/room/:roomId',
      schema: { params: roomParams, body: { type: 'object', properties: { visibility: { type: 'string', enum: ['public', 'private'] } } } },
      handler: async (request) => {
        const { userId } = await requireUser(request)
        const roomId = await existingRoom(request.params.roomId)
        if (!(await mayEditDirectory(roomId, userId))) throw forbidden('Your power level does not allow changing the room directory for this room')
        await setRoomPublished(db, roomId, (request.body.visibility ?? 'public') === 'public')
        return {}
      },
    })

    clientRoute<{ Querystring: { limit?: string; since?: string; server?: string } }>(app, {
      method: 'GET',
      path: '/publicRooms',
      schema: {
        querystring: {
          type: 'object',
          properties: { limit: { type: 'string', pattern: '^[0-9]{1,9}$' }, since: { type: 'string', maxLength: 64 }, server: { type: 'string', maxLength: 255 } },
        },
      },
      handler: async (request) => {
        await requireUser(request)
        const { limit, since, server } = request.query
        return listPublicRooms(server, limit === undefined ? undefined : Number(limit), since, undefined)
      },
    })

    clientRoute<{ Querystring: { server?: string }; Body: { limit?: number; since?: string; filter?: { generic_search_term?: string } } }>(app, {
      method: 'POST',
      path: '/publicRooms',
      schema: {
        querystring: { type: 'object', properties: { server: { type: 'string', maxLength: 255 } } },
        body: {
          type: 'object',
          properties: {
            limit: { type: 'integer', minimum: 0 },
            since: { type: 'string', maxLength: 64 },
            filter: { type: 'object', properties: { generic_search_term: { type: 'string', maxLength: 1024 } } },
          },
        },
      },
      handler: async (request) => {
        await requireUser(request)
        const { limit, since, filter } = request.body
        return listPublicRooms(request.query.server, limit, since, filter?.generic_search_term)
      },
    })

    async function listPublicRooms(server: string | undefined, requestedLimit: number | undefined, since: string | undefined, searchTerm: string | undefined) {
      if (server !== undefined && server !== serverName) throw new MatrixError(400, 'M_UNRECOGNIZED', 'Other servers\u2019 room directories are not supported (no federation)')
      const limit = Math.min(requestedLimit ?? defaultPublicRoomsLimit, maxPublicRoomsLimit)
      const offset = since === undefined ? 0 : offsetOf(since)
      if (limit === 0) return { chunk: [], total_room_count_estimate: 0 }
      const page = await publicRooms(db, { limit, offset, ...(searchTerm !== undefined && { searchTerm }) })
      return {
        chunk: page.chunk,
        total_room_count_estimate: page.total,
        ...(page.nextOffset !== undefined && { next_batch: `o${page.nextOffset}` }),
        ...(offset > 0 && { prev_batch: `o${Math.max(0, offset - limit)}` }),
      }
    }
  }
}

/** The offset of a `/publicRooms` pagination token (`o<offset>`). */
function offsetOf(token: string): number {
  const match = /^o([0-9]{1,9})$/.exec(token)
  if (!match) throw invalidParam(`Invalid pagination token ${JSON.stringify(token)}`)
  return Number(match[1])
}
