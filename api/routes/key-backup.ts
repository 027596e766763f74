import type { FastifyPluginAsync, FastifyRequest } from 'fastify'
import {
  createBackupVersion,
  deleteBackupVersion,
  deleteRoomKeys,
  getBackupVersion,
  getRoomKeys,
  putRoomKeys,
  updateBackupVersion,
  type KeyBackupData,
  type KeySelection,
  type RoomKeys,
} from '../../storage/key-backup.js'
import { clientRoute } from '../client-route.js'
import { MatrixError, invalidParam, notFound } from '../errors.js'
import { requireUser } from '../require-user.js'

/**
 * Server-side key backup (client-server API "Server-side key backups"), over
 * storage/key-backup.ts; any api process serves it:
 * - `POST /room_keys/version` creates a version (the current one from then on); `GET
 *   /room_keys/version[/{version}]` reads the current or a given one (404 `M_NOT_FOUND` when
 *   there is none: how clients learn that no backup exists); `PUT` replaces its `auth_data`;
 *   `DELETE` deletes it with its keys;
 * - `PUT|GET|DELETE /room_keys/keys[/{roomId}[/{sessionId}]]?version=` writes, reads and
 *   deletes keys. Writes go to the current version only (403 `M_WRONG_ROOM_KEYS_VERSION` with
 *   `current_version` otherwise); they answer the version's key `count` and `etag`.
 */

const versionInfo = {
  type: 'object',
  required: ['algorithm', 'auth_data'],
  properties: { algorithm: { type: 'string', minLength: 1, maxLength: 255 }, auth_data: { type: 'object' }, version: { type: 'string', maxLength: 20 } },
} as const
const keyBackupData = {
  type: 'object',
  required: ['first_message_index', 'forwarded_count', 'is_verified', 'session_data'],
  properties: {
    first_message_index: { type: 'integer', minimum: 0, maximum: 2147483647 },
    forwarded_count: { type: 'integer', minimum: 0, maximum: 2147483647 },
    is_verified: { type: 'boolean' },
    session_data: { type: 'object' },
  },
} as const
const sessions = { type: 'object', maxProperties: 10_000, propertyNames: { maxLength: 255 }, additionalProperties: keyBackupData } as const
const roomSessions = { type: 'object', required: ['sessions'], properties: { sessions } } as const
const allRooms = {
  type: 'object',
  required: ['rooms'],
  properties: { rooms: { type: 'object', maxProperties: 10_000, propertyNames: { maxLength: 255 }, additionalProperties: roomSessions } },
} as const
const versionQuery = { type: 'object', required: ['version'], properties: { version: { type: 'string', maxLength: 20 } } } as const
const idParam = { type: 'string', minLength: 1, maxLength: 255 } as const
const versionParams = { type: 'object', properties: { version: { type: 'string', maxLength: 20 } } } as const

interface VersionInfo {
  algorithm: string
  auth_data: Record<string, unknown>
  version?: string
}
type KeysParams = { roomId?: string; sessionId?: string }

/** The three shapes of the keys paths: every room, one room, one session. */
const keyPaths = [
  { path: '/room_keys/keys', params: undefined },
  { path: '/room_keys/keys/:roomId', params: { type: 'object', required: ['roomId'], properties: { roomId: idParam } } },
  { path: '/room_keys/keys/:roomId/:sessionId', params: { type: 'object', required: ['roomId', 'sessionId'], properties: { roomId: idParam, sessionId: idParam } } },
] as const

export const keyBackupRoutes: FastifyPluginAsync = async (app) => {
  const { db } = app.myelin
  const noSuchVersion = (version?: string) => notFound(version === undefined ? 'No current backup version' : `Unknown backup version ${JSON.stringify(version.slice(0, 40))}`)

  clientRoute<{ Body: VersionInfo }>(app, {
    method: 'POST',
    path: '/room_keys/version',
    schema: { body: versionInfo },
    handler: async (request) => {
      const { userId } = await requireUser(request)
      return { version: await createBackupVersion(db, userId, request.body) }
    },
  })

  for (const path of ['/room_keys/version', '/room_keys/version/:version']) {
    clientRoute<{ Params: { version?: string } }>(app, {
      method: 'GET',
      path,
      schema: { params: versionParams },
      handler: async (request) => {
        const { userId } = await requireUser(request)
        const backup = await getBackupVersion(db, userId, request.params.version)
        if (backup === undefined) throw noSuchVersion(request.params.version)
        return backup
      },
    })
  }

  clientRoute<{ Params: { version: string }; Body: VersionInfo }>(app, {
    method: 'PUT',
    path: '/room_keys/version/:version',
    schema: { params: versionParams, body: versionInfo },
    handler: async (request) => {
      const { userId } = await requireUser(request)
      const { version } = request.params
      if (request.body.version !== undefined && request.body.version !== version) throw invalidParam('The version in the body must be the one in the path')
      if (!(await updateBackupVersion(db, userId, version, request.body))) throw noSuchVersion(version)
      return {}
    },
  })

  clientRoute<{ Params: { version: string } }>(app, {
    method: 'DELETE',
    path: '/room_keys/version/:version',
    schema: { params: versionParams },
    handler: async (request) => {
      const { userId } = await requireUser(request)
      if (!(await deleteBackupVersion(db, userId, request.params.version))) throw noSuchVersion(request.params.version)
      return {}
    },
  })

  const selection = (params: KeysParams): KeySelection => ({
    ...(params.roomId !== undefined && { roomId: params.roomId }),
    ...(params.sessionId !== undefined && { sessionId: params.sessionId }),
  })

  for (const [i, { path, params }] of keyPaths.entries()) {
    const body = [allRooms, roomSessions, keyBackupData][i]!
    /** The request body as rooms → sessions, whatever the path's shape. */
    const roomKeys = (request: FastifyRequest<{ Params: KeysParams; Body: unknown }>): RoomKeys => {
      const { roomId, sessionId } = request.params
      if (roomId === undefined) {
        const { rooms } = request.body as { rooms: Record<string, { sessions: Record<string, KeyBackupData> }> }
        return Object.fromEntries(Object.entries(rooms).map(([room, r]) => [room, r.sessions]))
      }
      if (sessionId === undefined) return { [roomId]: (request.body as { sessions: Record<string, KeyBackupData> }).sessions }
      return { [roomId]: { [sessionId]: request.body as KeyBackupData } }
    }

    clientRoute<{ Params: KeysParams; Querystring: { version: string }; Body: unknown }>(app, {
      method: 'PUT',
      path,
      schema: { ...(params && { params }), querystring: versionQuery, body },
      handler: async (request) => {
        const { userId } = await requireUser(request)
        const result = await putRoomKeys(db, userId, request.query.version, roomKeys(request))
        if (result.kind === 'not-found') throw noSuchVersion(request.query.version)
        if (result.kind === 'wrong-version') {
          throw new MatrixError(403, 'M_WRONG_ROOM_KEYS_VERSION', 'Keys go to the current backup version only', { current_version: result.current })
        }
        return { count: result.count, etag: result.etag }
      },
    })

    clientRoute<{ Params: KeysParams; Querystring: { version: string } }>(app, {
      method: 'GET',
      path,
      schema: { ...(params && { params }), querystring: versionQuery },
      handler: async (request) => {
        const { userId } = await requireUser(request)
        const { roomId, sessionId } = request.params
        const rooms = await getRoomKeys(db, userId, request.query.version, selection(request.params))
        if (rooms === undefined) throw noSuchVersion(request.query.version)
        if (roomId === undefined) return { rooms: Object.fromEntries(Object.entries(rooms).map(([room, s]) => [room, { sessions: s }])) }
        if (sessionId === undefined) return { sessions: rooms[roomId] ?? {} }
        const key = rooms[roomId]?.[sessionId]
        if (key === undefined) throw notFound('No backed-up key for this session')
        return key
      },
    })

    clientRoute<{ Params: KeysParams; Querystring: { version: string } }>(app, {
      method: 'DELETE',
      path,
      schema: { ...(params && { params }), querystring: versionQuery },
      handler: async (request) => {
        const { userId } = await requireUser(request)
        const counts = await deleteRoomKeys(db, userId, request.query.version, selection(request.params))
        if (counts === undefined) throw noSuchVersion(request.query.version)
        return counts
      },
    })
  }
}
