import { randomUUID } from 'node:crypto'
import type { FastifyBaseLogger, FastifyPluginAsync, FastifyReply } from 'fastify'
import { randomAlphanumeric } from '../../storage/access-token.js'
import { createUser, deleteDevices, getUser, listDevices, setPasswordHash, updateUser } from '../../storage/accounts.js'
import {
  adminRoomMembers,
  adminRoomOrders,
  adminRooms,
  adminRoomSummaries,
  adminUser,
  adminUserOrders,
  adminUsers,
  blockRoom,
  purgeRoom,
  roomBlock,
  roomDeletions,
  startRoomDeletion,
  unblockRoom,
  updateRoomDeletion,
  type RoomShutdown,
  type AdminRoomOrder,
  type AdminUserOrder,
} from '../../storage/admin.js'
import { getCurrentState } from '../../storage/events/event-store.js'
import { deleteMedia, userMedia } from '../../storage/media.js'
import { hashPassword } from '../../storage/password-hash.js'
import { getProfile, setProfile } from '../../storage/profiles.js'
import { joinedRooms } from '../../storage/room-reads.js'
import { createRegistrationToken, deleteRegistrationToken, registrationToken, registrationTokens, updateRegistrationToken } from '../../storage/registration-tokens.js'
import { deleteAlias, moveAliases, roomAliases } from '../../storage/room-aliases.js'
import { setRoomPublished } from '../../storage/room-directory.js'
import { MatrixError, notFound } from '../errors.js'
import { requireAdmin } from '../require-user.js'
import { planRoomCreation, profileContent } from '../room-creation.js'
import { checkRoomId, checkUserId, generateRoomId, serverNameOf } from '../room-ids.js'
import { powerLevels, stateKey } from '../../persisters/auth-rules.js'
import { RejectedEventError } from '../../persisters/persist-errors.js'
import type { RoomServices } from '../room-services.js'
import { checkLocalpart } from '../user-ids.js'
import { closeAccount, leaveRoom } from './deactivate.js'

/**
 * Synapse's admin API for accounts and rooms (the subset operators' tools such as synapse-admin
 * use most), server admins only (`users.admin`; 403 `M_FORBIDDEN` for anyone else):
 *
 * - `GET /_synapse/admin/v1/server_version`;
 * - `GET /_synapse/admin/v2/users` (`from`, `limit` (default 100, at most 1,000), `name`,
 *   `deactivated` (default false: not listed), `admins`, `order_by`, `dir`) → `{users, total,
 *   next_token?}`;
 * - `GET /_synapse/admin/v2/users/{userId}`; `PUT` creates (201) or changes (200) a local
 *   account: `password` (with `logout_devices`, default true), `displayname`, `avatar_url`,
 *   `admin`, `deactivated` (true closes the account as `/account/deactivate` does; false
 *   reactivates it and needs a `password`);
 * - `GET|PUT /_synapse/admin/v1/users/{userId}/admin` (`{admin}`; not to demote oneself);
 * - `GET /_synapse/admin/v1/users/{userId}/joined_rooms`; `GET /_synapse/admin/v2/users/{userId}/devices`,
 *   `DELETE …/devices/{deviceId}` (the device and its tokens);
 * - `GET|DELETE /_synapse/admin/v1/users/{userId}/media`, `DELETE /_synapse/admin/v1/media/{serverName}/{mediaId}`;
 * - `POST /_synapse/admin/v1/deactivate/{userId}` (`erase`);
 * - `POST /_synapse/admin/v1/reset_password/{userId}` (`new_password`, `logout_devices`);
 * - `GET /_synapse/admin/v1/rooms` (`from`, `limit`, `order_by`, `dir`, `search_term`) →
 *   `{rooms, offset, total_rooms, next_batch?, prev_batch?}`;
 * - `GET /_synapse/admin/v1/rooms/{roomId}`, `…/members`, `…/state`;
 * - `/_synapse/admin/v1/registration_tokens`: list (`valid`), `POST …/new` (`token` or `length`,
 *   `uses_allowed`, `expiry_time`), `GET|PUT|DELETE …/{token}`;
 * - `POST /_synapse/admin/v1/rooms/{roomId}/make_room_admin` (`user_id`, default the requester):
 *   the joined member with the most power gives the user the same level, and invites them into a
 *   room that is not public;
 * - `GET|PUT /_synapse/admin/v1/rooms/{roomId}/block` (`{block}`): a blocked room takes no local
 *   joins, knocks or invites;
 * - `DELETE /_synapse/admin/v1/rooms/{roomId}` (answered when done) and `DELETE
 *   /_synapse/admin/v2/rooms/{roomId}` (answered at once with a `delete_id`; `GET
 *   …/v2/rooms/{roomId}/delete_status` and `…/v2/rooms/delete_status/{deleteId}` tell how far it
 *   got, from any api worker) (`block`, `purge` (default true), `force_purge`,
 *   `new_room_user_id`, `room_name`, `message`): every local member leaves (the server acting
 *   for them); with `new_room_user_id` they are joined to a new room of that user's, with the
 *   message, and the aliases move there, otherwise they are deleted; then the room is purged
 *   (storage/admin.ts `purgeRoom`) unless someone could not be removed (409, unless
 *   `force_purge`). Answers `{kicked_users, failed_to_kick_users, local_aliases, new_room_id}`.
 *
 * The routes are under `/_synapse/`, which the router and the nginx configuration send to the
 * api workers; an operator who does not want them reachable from outside blocks that prefix at
 * their edge (as Synapse's documentation advises).
 */

const idParam = { type: 'string', minLength: 1, maxLength: 2048 } as const
const userParams = { type: 'object', required: ['userId'], properties: { userId: idParam } } as const
const boolString = { type: 'string', enum: ['true', 'false'] } as const
const offsetString = { type: 'string', pattern: '^[0-9]{1,9}$' } as const
const limitString = { type: 'string', pattern: '^[1-9][0-9]{0,5}$' } as const
const password = { type: 'string', minLength: 1, maxLength: 512 } as const

interface UserPut {
  password?: string
  logout_devices?: boolean
  displayname?: string | null
  avatar_url?: string | null
  admin?: boolean
  deactivated?: boolean
}

interface RoomDelete {
  new_room_user_id?: string
  room_name?: string
  message?: string
  block?: boolean
  purge?: boolean
  force_purge?: boolean
}

/** Synapse's defaults for the room members of a deleted room are moved to. */
const defaultNoticeRoomName = 'Content Violation Notification'
const defaultNoticeMessage = 'Sharing illegal content on this server is not permitted and rooms in violation will be blocked.'

/** The version string `server_version` answers. */
const serverVersion = 'Myelin'

/**
 * @example
 * const app = await buildApp(ctx, { plugins: [adminRoutes(services)] })
 * await app.inject({ method: 'GET', url: '/_synapse/admin/v2/users', headers: { authorization: `Bearer ${adminToken}` } })
 */
export function adminRoutes(services: RoomServices): FastifyPluginAsync {
  return async (app) => {
    const runtime = app.myelin
    const { db } = runtime
    const serverName = runtime.config.server_name
    const pageLimit = (raw: string | undefined) => Math.min(raw === undefined ? 100 : Number(raw), 1000)

    /** A local user ID (400 otherwise: the admin API manages this server's accounts). */
    const localUserId = (raw: string) => {
      const userId = checkUserId(raw)
      if (serverNameOf(userId) !== serverName) throw new MatrixError(400, 'M_INVALID_PARAM', 'Can only manage local users')
      return userId
    }
    const existingUser = async (raw: string) => {
      const userId = localUserId(raw)
      if ((await getUser(db, userId)) === undefined) throw notFound('User not found')
      return userId
    }
    const existingRoom = async (raw: string) => {
      const roomId = checkRoomId(raw)
      const summary = (await adminRoomSummaries(db, [roomId])).get(roomId)
      if (summary === undefined) throw notFound('Room not found')
      return summary
    }
    /** Deletes every device (and token) of the user, as a password reset does by default. */
    const logOutEverywhere = async (userId: string) => {
      const deviceIds = await deleteDevices(db, userId, 'all')
      runtime.auth.forget({ userId, deviceIds })
    }

    app.get('/_synapse/admin/v1/server_version', async (request) => {
      await requireAdmin(request)
      return { server_version: serverVersion }
    })

    app.route<{ Querystring: { from?: string; limit?: string; name?: string; user_id?: string; deactivated?: 'true' | 'false'; admins?: 'true' | 'false'; order_by?: AdminUserOrder; dir?: 'f' | 'b'; guests?: string } }>({
      method: 'GET',
      url: '/_synapse/admin/v2/users',
      schema: {
        querystring: {
          type: 'object',
          properties: {
            from: offsetString,
            limit: limitString,
            name: { type: 'string', maxLength: 255 },
            user_id: { type: 'string', maxLength: 255 },
            deactivated: boolString,
            admins: boolString,
            guests: boolString,
            order_by: { type: 'string', enum: adminUserOrders },
            dir: { type: 'string', enum: ['f', 'b'] },
          },
        },
      },
      handler: async (request) => {
        await requireAdmin(request)
        const q = request.query
        const offset = q.from === undefined ? 0 : Number(q.from)
        const limit = pageLimit(q.limit)
        const name = q.name ?? q.user_id
        const { users, total } = await adminUsers(db, {
          offset,
          limit,
          deactivated: q.deactivated === 'true',
          orderBy: q.order_by ?? 'name',
          dir: q.dir ?? 'f',
          ...(name !== undefined && { name }),
          ...(q.admins !== undefined && { admins: q.admins === 'true' }),
        })
        return { users, total, ...(offset + users.length < total && { next_token: String(offset + users.length) }) }
      },
    })

    app.route<{ Params: { userId: string } }>({
      method: 'GET',
      url: '/_synapse/admin/v2/users/:userId',
      schema: { params: userParams },
      handler: async (request) => {
        await requireAdmin(request)
        const user = await adminUser(db, localUserId(request.params.userId))
        if (user === undefined) throw notFound('User not found')
        return user
      },
    })

    app.route<{ Params: { userId: string }; Body: UserPut }>({
      method: 'PUT',
      url: '/_synapse/admin/v2/users/:userId',
      schema: {
        params: userParams,
        body: {
          type: 'object',
          properties: {
            password,
            logout_devices: { type: 'boolean' },
            displayname: { type: ['string', 'null'], maxLength: 256 },
            avatar_url: { type: ['string', 'null'], maxLength: 2048 },
            admin: { type: 'boolean' },
            deactivated: { type: 'boolean' },
          },
        },
      },
      handler: async (request, reply: FastifyReply) => {
        await requireAdmin(request)
        const userId = localUserId(request.params.userId)
        const body = request.body
        const before = await getUser(db, userId)
        const passwordHash = body.password === undefined ? undefined : await hashPassword(body.password)
        const profile = {
          ...(body.displayname !== undefined && { displayname: body.displayname }),
          ...(body.avatar_url !== undefined && { avatar_url: body.avatar_url }),
        }
        if (before === undefined) {
          checkLocalpart(userId.slice(1, userId.indexOf(':')), serverName)
          if (body.deactivated === true) throw new MatrixError(400, 'M_INVALID_PARAM', 'Cannot create a deactivated user')
          const created = await db.transaction().execute(async (trx) => {
            const outcome = await createUser(trx, { userId, passwordHash: passwordHash ?? null, nowMs: runtime.clock(), admin: body.admin === true })
            if (outcome === 'created') await setProfile(trx, userId, { displayname: userId.slice(1, userId.indexOf(':')), ...profile })
            return outcome === 'created'
          })
          if (created) {
            request.log.info({ userId }, 'admin created a user')
            return reply.code(201).send(await adminUser(db, userId))
          }
        }
        // Reactivating needs a password (as Synapse): an account without one could never log in.
        const reactivate = before?.deactivated === true && body.deactivated === false
        if (reactivate && passwordHash === undefined) throw new MatrixError(400, 'M_MISSING_PARAM', 'Reactivating a user needs a password')
        if (body.deactivated === true && before?.deactivated !== true) {
          await closeAccount(runtime, services, userId, { erase: false })
        } else {
          await updateUser(db, userId, { ...(body.admin !== undefined && { admin: body.admin }), ...(reactivate && { reactivateWith: passwordHash }) })
          if (passwordHash !== undefined && !reactivate) {
            await setPasswordHash(db, userId, passwordHash)
            if (body.logout_devices !== false) await logOutEverywhere(userId)
          }
        }
        if (body.deactivated !== true && Object.keys(profile).length > 0) await setProfile(db, userId, profile)
        request.log.info({ userId, fields: Object.keys(body).filter((k) => k !== 'password') }, 'admin changed a user')
        return adminUser(db, userId)
      },
    })

    app.route<{ Params: { userId: string } }>({
      method: 'GET',
      url: '/_synapse/admin/v1/users/:userId/admin',
      schema: { params: userParams },
      handler: async (request) => {
        await requireAdmin(request)
        return { admin: (await getUser(db, await existingUser(request.params.userId)))?.admin === true }
      },
    })

    app.route<{ Params: { userId: string }; Body: { admin: boolean } }>({
      method: 'PUT',
      url: '/_synapse/admin/v1/users/:userId/admin',
      schema: { params: userParams, body: { type: 'object', required: ['admin'], properties: { admin: { type: 'boolean' } } } },
      handler: async (request) => {
        const { userId: self } = await requireAdmin(request)
        const userId = await existingUser(request.params.userId)
        // As Synapse: an admin cannot demote themselves (the server could be left without one).
        if (userId === self && !request.body.admin) throw new MatrixError(400, 'M_UNKNOWN', 'You may not demote yourself')
        await updateUser(db, userId, { admin: request.body.admin })
        request.log.info({ userId, admin: request.body.admin }, 'admin changed a server admin flag')
        return {}
      },
    })

    app.route<{ Params: { userId: string } }>({
      method: 'GET',
      url: '/_synapse/admin/v1/users/:userId/joined_rooms',
      schema: { params: userParams },
      handler: async (request) => {
        await requireAdmin(request)
        const rooms = await joinedRooms(db, await existingUser(request.params.userId))
        return { joined_rooms: rooms, total: rooms.length }
      },
    })

    app.route<{ Params: { userId: string } }>({
      method: 'GET',
      url: '/_synapse/admin/v2/users/:userId/devices',
      schema: { params: userParams },
      handler: async (request) => {
        await requireAdmin(request)
        const userId = await existingUser(request.params.userId)
        const devices = (await listDevices(db, userId)).map((d) => ({ device_id: d.deviceId, display_name: d.displayName, last_seen_ts: d.lastSeenTs, last_seen_ip: null, last_seen_user_agent: null, user_id: userId }))
        return { devices, total: devices.length }
      },
    })

    app.route<{ Params: { userId: string; deviceId: string } }>({
      method: 'DELETE',
      url: '/_synapse/admin/v2/users/:userId/devices/:deviceId',
      schema: { params: { type: 'object', required: ['userId', 'deviceId'], properties: { userId: idParam, deviceId: idParam } } },
      handler: async (request) => {
        await requireAdmin(request)
        const userId = await existingUser(request.params.userId)
        // Deleting a device that is not there succeeds, as Synapse's does.
        const deviceIds = await deleteDevices(db, userId, [request.params.deviceId])
        runtime.auth.forget({ userId, deviceIds })
        return {}
      },
    })

    app.route<{ Params: { userId: string }; Querystring: { from?: string; limit?: string; dir?: 'f' | 'b' } }>({
      method: 'GET',
      url: '/_synapse/admin/v1/users/:userId/media',
      schema: { params: userParams, querystring: { type: 'object', properties: { from: offsetString, limit: limitString, dir: { type: 'string', enum: ['f', 'b'] } } } },
      handler: async (request) => {
        await requireAdmin(request)
        const userId = await existingUser(request.params.userId)
        const offset = request.query.from === undefined ? 0 : Number(request.query.from)
        const { media, total } = await userMedia(db, userId, { offset, limit: pageLimit(request.query.limit), dir: request.query.dir ?? 'b' })
        return { media, total, ...(offset + media.length < total && { next_token: offset + media.length }) }
      },
    })

    app.route<{ Params: { userId: string } }>({
      method: 'DELETE',
      url: '/_synapse/admin/v1/users/:userId/media',
      schema: { params: userParams },
      handler: async (request) => {
        await requireAdmin(request)
        const deleted = await deleteMedia(db, { userId: await existingUser(request.params.userId) })
        request.log.info({ files: deleted.length }, "admin deleted a user's media")
        return { deleted_media: deleted, total: deleted.length }
      },
    })

    app.route<{ Params: { serverName: string; mediaId: string } }>({
      method: 'DELETE',
      url: '/_synapse/admin/v1/media/:serverName/:mediaId',
      schema: { params: { type: 'object', required: ['serverName', 'mediaId'], properties: { serverName: idParam, mediaId: idParam } } },
      handler: async (request) => {
        await requireAdmin(request)
        if (request.params.serverName !== serverName) throw new MatrixError(400, 'M_INVALID_PARAM', 'Can only delete local media')
        const deleted = await deleteMedia(db, { mediaId: request.params.mediaId })
        if (deleted.length === 0) throw notFound('Unknown media')
        return { deleted_media: deleted, total: deleted.length }
      },
    })

    app.route<{ Params: { userId: string }; Body: { erase?: boolean } }>({
      method: 'POST',
      url: '/_synapse/admin/v1/deactivate/:userId',
      schema: { params: userParams, body: { type: ['object', 'null'], properties: { erase: { type: 'boolean' } } } },
      handler: async (request) => {
        await requireAdmin(request)
        const userId = await existingUser(request.params.userId)
        const { rooms, devices } = await closeAccount(runtime, services, userId, { erase: request.body?.erase === true })
        request.log.info({ userId, rooms, devices }, 'admin deactivated a user')
        return { id_server_unbind_result: 'no-support' }
      },
    })

    app.route<{ Params: { userId: string }; Body: { new_password: string; logout_devices?: boolean } }>({
      method: 'POST',
      url: '/_synapse/admin/v1/reset_password/:userId',
      schema: {
        params: userParams,
        body: { type: 'object', required: ['new_password'], properties: { new_password: password, logout_devices: { type: 'boolean' } } },
      },
      handler: async (request) => {
        await requireAdmin(request)
        const userId = await existingUser(request.params.userId)
        if ((await getUser(db, userId))?.deactivated === true) throw new MatrixError(400, 'M_INVALID_PARAM', 'The user is deactivated')
        await setPasswordHash(db, userId, await hashPassword(request.body.new_password))
        if (request.body.logout_devices !== false) await logOutEverywhere(userId)
        return {}
      },
    })

    app.route<{ Querystring: { from?: string; limit?: string; order_by?: AdminRoomOrder; dir?: 'f' | 'b'; search_term?: string } }>({
      method: 'GET',
      url: '/_synapse/admin/v1/rooms',
      schema: {
        querystring: {
          type: 'object',
          properties: {
            from: offsetString,
            limit: limitString,
            order_by: { type: 'string', enum: adminRoomOrders },
            dir: { type: 'string', enum: ['f', 'b'] },
            search_term: { type: 'string', maxLength: 255 },
          },
        },
      },
      handler: async (request) => {
        await requireAdmin(request)
        const q = request.query
        const offset = q.from === undefined ? 0 : Number(q.from)
        const limit = pageLimit(q.limit)
        const { rooms, total } = await adminRooms(db, { offset, limit, orderBy: q.order_by ?? 'name', dir: q.dir ?? 'f', ...(q.search_term !== undefined && { searchTerm: q.search_term }) })
        return {
          rooms,
          offset,
          total_rooms: total,
          ...(offset + rooms.length < total && { next_batch: offset + rooms.length }),
          ...(offset > 0 && { prev_batch: Math.max(0, offset - limit) }),
        }
      },
    })

    const tokenParams = { type: 'object', required: ['token'], properties: { token: { type: 'string', minLength: 1, maxLength: 64 } } } as const
    const tokenFields = { uses_allowed: { type: ['integer', 'null'], minimum: 0, maximum: 2 ** 31 - 1 }, expiry_time: { type: ['integer', 'null'], minimum: 0 } } as const
    const existingToken = async (token: string) => {
      const found = await registrationToken(db, token)
      if (found === undefined) throw notFound('No such registration token')
      return found
    }
    /** An expiry in the past would make a token nobody can use (Synapse refuses it too). */
    const checkExpiry = (expiry: number | null | undefined) => {
      if (typeof expiry === 'number' && expiry <= runtime.clock()) throw new MatrixError(400, 'M_INVALID_PARAM', 'expiry_time must not be in the past')
    }

    app.route<{ Querystring: { valid?: 'true' | 'false' | '' } }>({
      method: 'GET',
      url: '/_synapse/admin/v1/registration_tokens',
      // An empty `valid=` (matrix-bot-sdk's listRegistrationTokens() sends one) means no filter.
      schema: { querystring: { type: 'object', properties: { valid: { type: 'string', enum: ['true', 'false', ''] } } } },
      handler: async (request) => {
        await requireAdmin(request)
        const { valid } = request.query
        return { registration_tokens: await registrationTokens(db, { now: runtime.clock(), ...(valid !== undefined && valid !== '' && { valid: valid === 'true' }) }) }
      },
    })

    app.route<{ Body: { token?: string; length?: number; uses_allowed?: number | null; expiry_time?: number | null } | null }>({
      method: 'POST',
      url: '/_synapse/admin/v1/registration_tokens/new',
      schema: {
        body: {
          type: ['object', 'null'],
          properties: { token: { type: 'string', minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9._~-]+$' }, length: { type: 'integer', minimum: 1, maximum: 64 }, ...tokenFields },
        },
      },
      handler: async (request) => {
        await requireAdmin(request)
        const body = request.body ?? {}
        checkExpiry(body.expiry_time)
        const token = body.token ?? randomAlphanumeric(body.length ?? 16)
        const created = await createRegistrationToken(db, { token, uses_allowed: body.uses_allowed ?? null, expiry_time: body.expiry_time ?? null })
        if (created === 'exists') throw new MatrixError(400, 'M_INVALID_PARAM', 'Token already in use')
        request.log.info({ uses_allowed: body.uses_allowed ?? null }, 'admin made a registration token')
        return existingToken(token)
      },
    })

    app.route<{ Params: { token: string } }>({
      method: 'GET',
      url: '/_synapse/admin/v1/registration_tokens/:token',
      schema: { params: tokenParams },
      handler: async (request) => {
        await requireAdmin(request)
        return existingToken(request.params.token)
      },
    })

    app.route<{ Params: { token: string }; Body: { uses_allowed?: number | null; expiry_time?: number | null } }>({
      method: 'PUT',
      url: '/_synapse/admin/v1/registration_tokens/:token',
      schema: { params: tokenParams, body: { type: 'object', properties: tokenFields } },
      handler: async (request) => {
        await requireAdmin(request)
        checkExpiry(request.body.expiry_time)
        const updated = await updateRegistrationToken(db, request.params.token, request.body)
        if (updated === undefined) throw notFound('No such registration token')
        return updated
      },
    })

    app.route<{ Params: { token: string } }>({
      method: 'DELETE',
      url: '/_synapse/admin/v1/registration_tokens/:token',
      schema: { params: tokenParams },
      handler: async (request) => {
        await requireAdmin(request)
        if (!(await deleteRegistrationToken(db, request.params.token))) throw notFound('No such registration token')
        return {}
      },
    })

    const roomParams = { type: 'object', required: ['roomId'], properties: { roomId: idParam } } as const

    app.route<{ Params: { roomId: string } }>({
      method: 'GET',
      url: '/_synapse/admin/v1/rooms/:roomId/block',
      schema: { params: roomParams },
      handler: async (request) => {
        await requireAdmin(request)
        const block = await roomBlock(db, checkRoomId(request.params.roomId))
        return block === undefined ? { block: false } : { block: true, user_id: block.userId }
      },
    })

    app.route<{ Params: { roomId: string }; Body: { block: boolean } }>({
      method: 'PUT',
      url: '/_synapse/admin/v1/rooms/:roomId/block',
      schema: { params: roomParams, body: { type: 'object', required: ['block'], properties: { block: { type: 'boolean' } } } },
      handler: async (request) => {
        const { userId } = await requireAdmin(request)
        const roomId = checkRoomId(request.params.roomId)
        if (request.body.block) await blockRoom(db, roomId, userId, runtime.clock())
        else await unblockRoom(db, roomId)
        request.log.info({ roomId, block: request.body.block }, 'admin changed a room block')
        return { block: request.body.block }
      },
    })

    const roomDeleteSchema = {
      params: roomParams,
      body: {
        type: ['object', 'null'],
        properties: {
          new_room_user_id: idParam,
          room_name: { type: 'string', maxLength: 255 },
          message: { type: 'string', maxLength: 4096 },
          block: { type: 'boolean' },
          purge: { type: 'boolean' },
          force_purge: { type: 'boolean' },
        },
      },
    } as const

    /**
     * The checks before a deletion, and its block: the room to delete, or undefined when the room
     * is not here and the request only blocks it (allowed, as Synapse; deleting it is 404).
     */
    async function prepareDeletion(rawRoomId: string, adminId: string, body: RoomDelete): Promise<{ roomId: string; replacementOwner?: string } | undefined> {
      const roomId = checkRoomId(rawRoomId)
      const exists = (await adminRoomSummaries(db, [roomId])).has(roomId)
      const replacementOwner = body.new_room_user_id === undefined ? undefined : await existingUser(body.new_room_user_id)
      if (body.block === true) await blockRoom(db, roomId, adminId, runtime.clock())
      if (!exists) {
        if (body.block === true) return undefined
        throw notFound('Room not found')
      }
      return { roomId, ...(replacementOwner !== undefined && { replacementOwner }) }
    }

    /**
     * Every local member leaves (the server acting for them); with a replacement owner the joined
     * ones go to a notice room, which gets the aliases; otherwise the aliases are deleted; the
     * room leaves the directory.
     */
    async function shutDownRoom(roomId: string, body: RoomDelete, replacementOwner: string | undefined, log: FastifyBaseLogger): Promise<RoomShutdown> {
      const members = await db
        .selectFrom('current_state_events')
        .select(['state_key', 'membership'])
        .where('room_id', '=', roomId)
        .where('type', '=', 'm.room.member')
        .where('membership', 'in', ['join', 'invite', 'knock'])
        .orderBy('state_key')
        .execute()
      const kicked: string[] = []
      const failed: string[] = []
      for (const { state_key: userId } of members) {
        try {
          await leaveRoom(runtime, services, roomId, userId)
          kicked.push(userId)
        } catch (err) {
          log.warn({ err, roomId, userId }, 'room deletion: could not remove a member')
          failed.push(userId)
        }
      }
      const joined = new Set(members.filter((m) => m.membership === 'join').map((m) => m.state_key))
      const newRoomId = replacementOwner === undefined ? null : await noticeRoom(replacementOwner, body, kicked.filter((u) => joined.has(u)))
      await setRoomPublished(db, roomId, false)
      const aliases = newRoomId === null ? await roomAliases(db, roomId) : await moveAliases(db, roomId, newRoomId)
      if (newRoomId === null) for (const alias of aliases) await deleteAlias(db, alias)
      log.info({ roomId, kicked: kicked.length, failed: failed.length, newRoomId }, 'admin shut a room down')
      return { kicked_users: kicked, failed_to_kick_users: failed, local_aliases: aliases, new_room_id: newRoomId }
    }

    /** The purge after a shutdown, unless `purge: false`; 409 when someone could not be removed, unless `force_purge`. */
    async function purgeAfter(roomId: string, body: RoomDelete, shutdown: RoomShutdown, log: FastifyBaseLogger): Promise<void> {
      if (body.purge === false) return
      if (shutdown.failed_to_kick_users.length > 0 && body.force_purge !== true) {
        throw new MatrixError(409, 'M_UNKNOWN', `${shutdown.failed_to_kick_users.length} members could not be removed, so the room was not purged (force_purge purges it anyway)`, { ...shutdown })
      }
      const events = await purgeRoom(db, roomId)
      log.info({ roomId, events }, 'admin purged a room')
    }

    const nothingShutDown: RoomShutdown = { kicked_users: [], failed_to_kick_users: [], local_aliases: [], new_room_id: null }

    app.route<{ Params: { roomId: string }; Body: RoomDelete | null }>({
      method: 'DELETE',
      url: '/_synapse/admin/v1/rooms/:roomId',
      schema: roomDeleteSchema,
      handler: async (request) => {
        const { userId: adminId } = await requireAdmin(request)
        const body = request.body ?? {}
        const target = await prepareDeletion(request.params.roomId, adminId, body)
        if (target === undefined) return nothingShutDown
        const shutdown = await shutDownRoom(target.roomId, body, target.replacementOwner, request.log)
        await purgeAfter(target.roomId, body, shutdown, request.log)
        return shutdown
      },
    })

    app.route<{ Params: { roomId: string }; Body: { user_id?: string } | null }>({
      method: 'POST',
      url: '/_synapse/admin/v1/rooms/:roomId/make_room_admin',
      schema: { params: roomParams, body: { type: ['object', 'null'], properties: { user_id: idParam } } },
      handler: async (request) => {
        const { userId: adminId } = await requireAdmin(request)
        const { room_id: roomId } = await existingRoom(request.params.roomId)
        const target = await existingUser(request.body?.user_id ?? adminId)
        const state = await getCurrentState(db, roomId)
        const roomState = new Map(state.map((e) => [stateKey(e.type, e.stateKey), { type: e.type, state_key: e.stateKey, sender: e.sender, content: e.content }]))
        const levels = powerLevels(roomState)
        // The joined member with the most power acts (every member is local: no federation).
        const joined = state.filter((e) => e.type === 'm.room.member' && e.membership === 'join').map((e) => e.stateKey)
        const actor = joined.sort((a, b) => levels.user(b) - levels.user(a) || (a < b ? -1 : 1))[0]
        if (actor === undefined || levels.user(actor) < levels.required('m.room.power_levels', true)) throw new MatrixError(400, 'M_UNKNOWN', 'No local member in the room can grant power')
        const granted = levels.user(actor)
        if (levels.user(target) < granted) {
          const content = roomState.get(stateKey('m.room.power_levels', ''))?.content ?? {}
          const users = typeof content['users'] === 'object' && content['users'] !== null ? content['users'] : {}
          try {
            await services.sender.send({ requestId: randomUUID(), roomId, events: [{ type: 'm.room.power_levels', state_key: '', sender: actor, content: { ...content, users: { ...users, [target]: granted } } }] })
          } catch (err) {
            if (err instanceof RejectedEventError) throw new MatrixError(400, 'M_UNKNOWN', `No local member in the room can grant power: ${err.reason}`)
            throw err
          }
        }
        const membership = state.find((e) => e.type === 'm.room.member' && e.stateKey === target)?.membership
        const joinRule = state.find((e) => e.type === 'm.room.join_rules' && e.stateKey === '')?.content['join_rule']
        if (membership !== 'join' && membership !== 'invite' && joinRule !== 'public') {
          await services.sender.send({ requestId: randomUUID(), roomId, events: [{ type: 'm.room.member', state_key: target, sender: actor, content: { membership: 'invite' } }] })
        }
        request.log.info({ roomId, userId: target, actor, level: granted }, 'admin made a room admin')
        return {}
      },
    })

    // The asynchronous form: answered with a delete_id at once, the work going on in this
    // process, its progress in `room_deletions` so that any api worker answers the status.
    app.route<{ Params: { roomId: string }; Body: RoomDelete | null }>({
      method: 'DELETE',
      url: '/_synapse/admin/v2/rooms/:roomId',
      schema: roomDeleteSchema,
      handler: async (request) => {
        const { userId: adminId } = await requireAdmin(request)
        const body = request.body ?? {}
        const target = await prepareDeletion(request.params.roomId, adminId, body)
        const deleteId = randomAlphanumeric(16)
        await startRoomDeletion(db, { deleteId, roomId: checkRoomId(request.params.roomId), now: runtime.clock() })
        if (target === undefined) {
          await updateRoomDeletion(db, deleteId, { status: 'complete', shutdown: nothingShutDown })
          return { delete_id: deleteId }
        }
        const log = request.log.child({ deleteId })
        void (async () => {
          try {
            const shutdown = await shutDownRoom(target.roomId, body, target.replacementOwner, log)
            await updateRoomDeletion(db, deleteId, { status: 'purging', shutdown })
            await purgeAfter(target.roomId, body, shutdown, log)
            await updateRoomDeletion(db, deleteId, { status: 'complete' })
          } catch (err) {
            log.error({ err, roomId: target.roomId }, 'room deletion failed')
            await updateRoomDeletion(db, deleteId, { status: 'failed', error: err instanceof Error ? err.message : String(err) }).catch((e: unknown) =>
              log.error({ err: e }, 'could not record a failed room deletion'),
            )
          }
        })()
        return { delete_id: deleteId }
      },
    })

    app.route<{ Params: { roomId: string } }>({
      method: 'GET',
      url: '/_synapse/admin/v2/rooms/:roomId/delete_status',
      schema: { params: roomParams },
      handler: async (request) => {
        await requireAdmin(request)
        const results = await roomDeletions(db, { roomId: checkRoomId(request.params.roomId) })
        if (results.length === 0) throw notFound('No deletion of this room')
        return { results: results.map(({ room_id: _room, ...deletion }) => deletion) }
      },
    })

    app.route<{ Params: { deleteId: string } }>({
      method: 'GET',
      url: '/_synapse/admin/v2/rooms/delete_status/:deleteId',
      schema: { params: { type: 'object', required: ['deleteId'], properties: { deleteId: { type: 'string', minLength: 1, maxLength: 64 } } } },
      handler: async (request) => {
        await requireAdmin(request)
        const [deletion] = await roomDeletions(db, { deleteId: request.params.deleteId })
        if (deletion === undefined) throw notFound('No such deletion')
        const { delete_id: _id, room_id: _room, ...status } = deletion
        return status
      },
    })

    /** The room the members of a deleted room are moved to (Synapse's `new_room_user_id`): its owner, the message, and them. */
    async function noticeRoom(owner: string, body: RoomDelete, users: readonly string[]): Promise<string> {
      const roomId = generateRoomId(serverName)
      const plan = planRoomCreation(roomId, owner, serverName, { preset: 'public_chat', name: body.room_name ?? defaultNoticeRoomName, power_level_content_override: { users: { [owner]: 100 }, users_default: -10 } }, (await getProfile(db, owner)) ?? {})
      await services.sender.send({ requestId: randomUUID(), roomId, events: plan.events })
      const message = { type: 'm.room.message', sender: owner, content: { msgtype: 'm.text', body: body.message ?? defaultNoticeMessage } }
      await services.sender.send({ requestId: randomUUID(), roomId, events: [message] })
      for (const userId of users) {
        const profile = profileContent((await getProfile(db, userId)) ?? {})
        await services.sender.send({ requestId: randomUUID(), roomId, events: [{ type: 'm.room.member', state_key: userId, sender: userId, content: { membership: 'join', ...profile } }] })
      }
      return roomId
    }

    /** A read of one existing room (404 otherwise) under `/_synapse/admin/v1/rooms/{roomId}`. */
    const roomRead = (suffix: string, read: (summary: Awaited<ReturnType<typeof existingRoom>>) => Promise<unknown>) =>
      app.route<{ Params: { roomId: string } }>({
        method: 'GET',
        url: `/_synapse/admin/v1/rooms/:roomId${suffix}`,
        schema: { params: roomParams },
        handler: async (request) => {
          await requireAdmin(request)
          return read(await existingRoom(request.params.roomId))
        },
      })
    roomRead('', async (summary) => summary)
    roomRead('/members', async ({ room_id: roomId }) => {
      const members = await adminRoomMembers(db, roomId)
      return { members, total: members.length }
    })
    roomRead('/state', async ({ room_id: roomId }) => {
      const state = await getCurrentState(db, roomId)
      return { state: state.map((s) => ({ type: s.type, state_key: s.stateKey, sender: s.sender, content: s.content, event_id: s.eventId, room_id: roomId })) }
    })
  }
}
