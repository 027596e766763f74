import type { FastifyPluginAsync } from 'fastify'
import { deleteDevices, getUser } from '../../storage/accounts.js'
import { verifyAgainstDummy, verifyPassword } from '../../storage/password-hash.js'
import { startSession } from '../account-sessions.js'
import { clientRoute } from '../client-route.js'
import { forbidden, limitExceeded, MatrixError } from '../errors.js'
import { requireUser } from '../require-user.js'
import { loginUserId } from '../user-ids.js'
import { maxPasswordLength } from './register.js'

/**
 * `GET|POST /login`, `POST /logout`, `POST /logout/all`.
 *
 * Password login only (`m.login.password`, identifier `m.id.user` or the legacy `user` field).
 * An unknown user and a wrong password answer the same 403 after the same amount of work.
 * Failed attempts are rate limited per user ID (429 `M_LIMIT_EXCEEDED`). Logout deletes the
 * device with its tokens, as Synapse does; `/logout/all` deletes every device.
 */

interface LoginBody {
  type: string
  identifier?: { type?: string; user?: string }
  user?: string
  password?: string
  device_id?: string
  initial_device_display_name?: string
  refresh_token?: boolean
}

const loginSchema = {
  body: {
    type: 'object',
    required: ['type'],
    properties: {
      type: { type: 'string' },
      identifier: { type: 'object', properties: { type: { type: 'string' }, user: { type: 'string', maxLength: 512 } } },
      user: { type: 'string', maxLength: 512 },
      password: { type: 'string', maxLength: maxPasswordLength },
      device_id: { type: 'string', minLength: 1, maxLength: 255 },
      initial_device_display_name: { type: 'string', maxLength: 255 },
      refresh_token: { type: 'boolean' },
    },
  },
} as const

export const loginRoutes: FastifyPluginAsync = async (app) => {
  const runtime = app.myelin

  clientRoute(app, {
    method: 'GET',
    path: '/login',
    versions: ['v3', 'r0', 'api/v1'],
    schema: {},
    handler: async () => ({ flows: [{ type: 'm.login.password' }] }),
  })

  clientRoute<{ Body: LoginBody }>(app, {
    method: 'POST',
    path: '/login',
    versions: ['v3', 'r0', 'api/v1'],
    schema: loginSchema,
    handler: async (request) => {
      const body = request.body
      if (body.type !== 'm.login.password') throw new MatrixError(400, 'M_UNKNOWN', 'Unknown login type')
      if (body.identifier !== undefined && body.identifier.type !== 'm.id.user') {
        throw new MatrixError(400, 'M_UNKNOWN', 'Unknown login identifier type')
      }
      const named = body.identifier?.user ?? body.user
      if (named === undefined) throw new MatrixError(400, 'M_MISSING_PARAM', 'Missing identifier.user')
      if (body.password === undefined) throw new MatrixError(400, 'M_MISSING_PARAM', 'Missing password')
      const userId = loginUserId(named, runtime.config.server_name)
      const limitKey = userId ?? named
      const wait = runtime.failedLogins.retryAfterMs(limitKey)
      if (wait > 0) throw limitExceeded(wait)
      const user = userId === undefined ? undefined : await getUser(runtime.db, userId)
      // Deactivation removes the password (routes/deactivate.ts): say so, as Synapse does.
      if (user?.deactivated && !user.passwordHash) throw new MatrixError(403, 'M_USER_DEACTIVATED', 'This account has been deactivated')
      const ok = user?.passwordHash ? await verifyPassword(body.password, user.passwordHash) : await verifyAgainstDummy(body.password)
      if (!ok || !user || userId === undefined) {
        runtime.failedLogins.record(limitKey)
        throw forbidden('Invalid username or password')
      }
      if (user.deactivated) throw new MatrixError(403, 'M_USER_DEACTIVATED', 'This account has been deactivated')
      return startSession(runtime, {
        userId,
        ...(body.device_id !== undefined && { deviceId: body.device_id }),
        ...(body.initial_device_display_name !== undefined && { deviceDisplayName: body.initial_device_display_name }),
      })
    },
  })

  clientRoute(app, {
    method: 'POST',
    path: '/logout',
    schema: {},
    handler: async (request) => {
      const requester = await requireUser(request)
      await deleteDevices(runtime.db, requester.userId, [requester.deviceId])
      runtime.auth.forget({ userId: requester.userId, deviceIds: [requester.deviceId] })
      return {}
    },
  })

  clientRoute(app, {
    method: 'POST',
    path: '/logout/all',
    schema: {},
    handler: async (request) => {
      const requester = await requireUser(request)
      await deleteDevices(runtime.db, requester.userId, 'all')
      runtime.auth.forget({ userId: requester.userId })
      return {}
    },
  })
}
