import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import { randomAlphanumeric } from '../../storage/access-token.js'
import { createUser, deleteDevices, getUser, listDevices, localpartOf, setPasswordHash, setShadowBanned, updateUser } from '../../storage/accounts.js'
import { adminUser, adminUserOrders, adminUsers, type AdminUserOrder } from '../../storage/admin.js'
import { deleteMedia, userMedia } from '../../storage/media.js'
import { hashPassword } from '../../storage/password-hash.js'
import { setProfile } from '../../storage/profiles.js'
import { joinedRooms } from '../../storage/room-reads.js'
import { createRegistrationToken, deleteRegistrationToken, registrationToken, registrationTokens, updateRegistrationToken } from '../../storage/registration-tokens.js'
import { clientRoute } from '../client-route.js'
import { MatrixError, notFound } from '../errors.js'
import { deleteRatelimitOverride, getRatelimitOverride, setRatelimitOverride } from '../../storage/ratelimit-overrides.js'
import { requireAdmin, requireUser } from '../require-user.js'
import type { RoomServices } from '../room-services.js'
import { checkLocalpart } from '../user-ids.js'
import { adminUsersOf, boolString, idParam, limitString, offsetString, pageLimit, pageOffset, userParams } from './admin-common.js'
import { closeAccount } from './deactivate.js'

/** The account routes of the admin API (admin.ts lists them all); `server_version` too. */

interface UserPut {
  password?: string
  logout_devices?: boolean
  displayname?: string | null
  avatar_url?: string | null
  admin?: boolean
  deactivated?: boolean
}

const password = { type: 'string', minLength: 1, maxLength: 512 } as const

/** The version string `server_version` answers. */
const serverVersion = 'Myelin'

export function adminUserRoutes(services: RoomServices): FastifyPluginAsync {
  return async (app) => {
    const runtime = app.myelin
    const { db } = runtime
    const serverName = runtime.config.server_name
    const { localUserId, existingAccount, existingUser } = adminUsersOf(app)
    /** Deletes devices of the user with their tokens (all: as a password reset does by default). */
    const deleteUserDevices = async (userId: string, which: 'all' | string[]) => {
      const deviceIds = await deleteDevices(db, userId, which)
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
        const offset = pageOffset(q.from)
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
          checkLocalpart(localpartOf(userId), serverName)
          if (body.deactivated === true) throw new MatrixError(400, 'M_INVALID_PARAM', 'Cannot create a deactivated user')
          const created = await db.transaction().execute(async (trx) => {
            const outcome = await createUser(trx, { userId, passwordHash: passwordHash ?? null, nowMs: runtime.clock(), admin: body.admin === true })
            if (outcome === 'created') await setProfile(trx, userId, { displayname: localpartOf(userId), ...profile })
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
            if (body.logout_devices !== false) await deleteUserDevices(userId, 'all')
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
        return { admin: (await existingAccount(request.params.userId)).admin }
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

    // Shadow bans: the user's sends, invites and typing are answered and dropped. Sessions on
    // this process see the change at once, on other processes when their token cache expires.
    for (const [method, banned] of [['POST', true], ['DELETE', false]] as const) {
      app.route<{ Params: { userId: string } }>({
        method,
        url: '/_synapse/admin/v1/users/:userId/shadow_ban',
        schema: { params: userParams },
        handler: async (request) => {
          await requireAdmin(request)
          const userId = await existingUser(request.params.userId)
          await setShadowBanned(db, userId, banned)
          runtime.auth.forget({ userId })
          request.log.info({ userId, banned }, 'admin changed a shadow ban')
          return {}
        },
      })
    }

    // A user's own message rate limit (rc_message): bridges and bots. 0 and 0 mean no limit.
    const overridePath = '/_synapse/admin/v1/users/:userId/override_ratelimit'
    app.get<{ Params: { userId: string } }>(overridePath, { schema: { params: userParams } }, async (request) => {
      await requireAdmin(request)
      return (await getRatelimitOverride(db, await existingUser(request.params.userId))) ?? {}
    })
    const limitValue = { type: 'integer', minimum: 0, maximum: 1_000_000 } as const
    app.post<{ Params: { userId: string }; Body: { messages_per_second?: number; burst_count?: number } | null }>(
      overridePath,
      { schema: { params: userParams, body: { type: ['object', 'null'], properties: { messages_per_second: limitValue, burst_count: limitValue } } } },
      async (request) => {
        await requireAdmin(request)
        const userId = await existingUser(request.params.userId)
        const override = { messages_per_second: request.body?.messages_per_second ?? 0, burst_count: request.body?.burst_count ?? 0 }
        await setRatelimitOverride(db, userId, override)
        runtime.messages.forget(userId)
        request.log.info({ userId, ...override }, 'admin overrode a user rate limit')
        return override
      },
    )
    app.delete<{ Params: { userId: string } }>(overridePath, { schema: { params: userParams } }, async (request) => {
      await requireAdmin(request)
      const userId = await existingUser(request.params.userId)
      await deleteRatelimitOverride(db, userId)
      runtime.messages.forget(userId)
      return {}
    })

    // Whois (client-server API "Server administration", and Synapse's admin path): a user's
    // devices, each one session with its last activity; asked by an admin or the user. No IP
    // addresses or user agents are kept, so connections carry only `last_seen`.
    const whois = async (request: FastifyRequest<{ Params: { userId: string } }>) => {
      const requester = await requireUser(request)
      const userId = await existingUser(request.params.userId)
      if (requester.userId !== userId) await requireAdmin(request)
      const devices = await listDevices(db, userId)
      return {
        user_id: userId,
        devices: Object.fromEntries(devices.map((d) => [d.deviceId, { sessions: [{ connections: d.lastSeenTs === null ? [] : [{ last_seen: d.lastSeenTs }] }] }])),
      }
    }
    app.get<{ Params: { userId: string } }>('/_synapse/admin/v1/whois/:userId', { schema: { params: userParams } }, whois)
    clientRoute<{ Params: { userId: string } }>(app, { method: 'GET', path: '/admin/whois/:userId', schema: { params: userParams }, handler: whois })

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
        await deleteUserDevices(userId, [request.params.deviceId])
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
        const offset = pageOffset(request.query.from)
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
        const { userId, deactivated } = await existingAccount(request.params.userId)
        if (deactivated) throw new MatrixError(400, 'M_INVALID_PARAM', 'The user is deactivated')
        await setPasswordHash(db, userId, await hashPassword(request.body.new_password))
        if (request.body.logout_devices !== false) await deleteUserDevices(userId, 'all')
        return {}
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
  }
}
