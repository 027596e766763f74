import type { FastifyPluginAsync, FastifyReply } from 'fastify'
import { createUser, deleteDevices, getUser, setPasswordHash, updateUser } from '../../storage/accounts.js'
import { adminRoomMembers, adminRoomOrders, adminRooms, adminRoomSummaries, adminUser, adminUserOrders, adminUsers, type AdminRoomOrder, type AdminUserOrder } from '../../storage/admin.js'
import { getCurrentState } from '../../storage/events/event-store.js'
import { hashPassword } from '../../storage/password-hash.js'
import { setProfile } from '../../storage/profiles.js'
import { MatrixError, notFound } from '../errors.js'
import { requireAdmin } from '../require-user.js'
import { checkRoomId, checkUserId, serverNameOf } from '../room-ids.js'
import type { RoomServices } from '../room-services.js'
import { checkLocalpart } from '../user-ids.js'
import { closeAccount } from './deactivate.js'

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
 * - `POST /_synapse/admin/v1/deactivate/{userId}` (`erase`);
 * - `POST /_synapse/admin/v1/reset_password/{userId}` (`new_password`, `logout_devices`);
 * - `GET /_synapse/admin/v1/rooms` (`from`, `limit`, `order_by`, `dir`, `search_term`) →
 *   `{rooms, offset, total_rooms, next_batch?, prev_batch?}`;
 * - `GET /_synapse/admin/v1/rooms/{roomId}`, `…/members`, `…/state`.
 *
 * The routes are under `/_synapse/`, which the router and the nginx configuration send to the
 * api workers; an operator who does not want them reachable from outside blocks that prefix at
 * their edge (as Synapse's documentation advises).
 */

const idParam = { type: 'string', minLength: 1, maxLength: 2048 } as const
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
      schema: { params: { type: 'object', required: ['userId'], properties: { userId: idParam } } },
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
        params: { type: 'object', required: ['userId'], properties: { userId: idParam } },
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

    app.route<{ Params: { userId: string }; Body: { erase?: boolean } }>({
      method: 'POST',
      url: '/_synapse/admin/v1/deactivate/:userId',
      schema: { params: { type: 'object', required: ['userId'], properties: { userId: idParam } }, body: { type: ['object', 'null'], properties: { erase: { type: 'boolean' } } } },
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
        params: { type: 'object', required: ['userId'], properties: { userId: idParam } },
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

    const roomParams = { type: 'object', required: ['roomId'], properties: { roomId: idParam } } as const

    app.route<{ Params: { roomId: string } }>({
      method: 'GET',
      url: '/_synapse/admin/v1/rooms/:roomId',
      schema: { params: roomParams },
      handler: async (request) => {
        await requireAdmin(request)
        return existingRoom(request.params.roomId)
      },
    })

    app.route<{ Params: { roomId: string } }>({
      method: 'GET',
      url: '/_synapse/admin/v1/rooms/:roomId/members',
      schema: { params: roomParams },
      handler: async (request) => {
        await requireAdmin(request)
        const { room_id: roomId } = await existingRoom(request.params.roomId)
        const members = await adminRoomMembers(db, roomId)
        return { members, total: members.length }
      },
    })

    app.route<{ Params: { roomId: string } }>({
      method: 'GET',
      url: '/_synapse/admin/v1/rooms/:roomId/state',
      schema: { params: roomParams },
      handler: async (request) => {
        await requireAdmin(request)
        const { room_id: roomId } = await existingRoom(request.params.roomId)
        const state = await getCurrentState(db, roomId)
        return { state: state.map((s) => ({ type: s.type, state_key: s.stateKey, sender: s.sender, content: s.content, event_id: s.eventId, room_id: roomId })) }
      },
    })
  }
}
