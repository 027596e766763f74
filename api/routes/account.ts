import type { FastifyPluginAsync } from 'fastify'
import { deleteDevices, setPasswordHash } from '../../storage/accounts.js'
import { hashPassword } from '../../storage/password-hash.js'
import { clientRoute } from '../client-route.js'
import { requireUser } from '../require-user.js'
import { authDictSchema, requirePasswordAuth, type AuthDict } from '../user-interactive-auth.js'
import { maxPasswordLength } from './register.js'

/**
 * `GET /account/whoami`, `POST /account/password` (user-interactive `m.login.password`; with
 * `logout_devices` (default true) every other device is deleted with its tokens), and
 * `GET /account/3pid` (Myelin has no third-party identifiers: always empty).
 */

interface PasswordBody {
  new_password: string
  logout_devices?: boolean
  auth?: AuthDict
}

export const accountRoutes: FastifyPluginAsync = async (app) => {
  const runtime = app.myelin

  clientRoute(app, {
    method: 'GET',
    path: '/account/whoami',
    schema: {},
    handler: async (request) => {
      const { userId, deviceId } = await requireUser(request)
      return { user_id: userId, device_id: deviceId, is_guest: false }
    },
  })

  clientRoute<{ Body: PasswordBody }>(app, {
    method: 'POST',
    path: '/account/password',
    schema: {
      body: {
        type: 'object',
        required: ['new_password'],
        properties: {
          new_password: { type: 'string', minLength: 1, maxLength: maxPasswordLength },
          logout_devices: { type: 'boolean' },
          auth: authDictSchema,
        },
      },
    },
    handler: async (request) => {
      const requester = await requireUser(request)
      await requirePasswordAuth(runtime, requester, request.body.auth)
      await setPasswordHash(runtime.db, requester.userId, await hashPassword(request.body.new_password))
      if (request.body.logout_devices !== false) {
        const deleted = await deleteDevices(runtime.db, requester.userId, 'all', { except: requester.deviceId })
        runtime.auth.forget({ userId: requester.userId, deviceIds: deleted })
      }
      return {}
    },
  })

  clientRoute(app, {
    method: 'GET',
    path: '/account/3pid',
    schema: {},
    handler: async (request) => {
      await requireUser(request)
      return { threepids: [] }
    },
  })
}
