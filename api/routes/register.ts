import type { FastifyPluginAsync } from 'fastify'
import { randomAlphanumeric } from '../../storage/access-token.js'
import { getUser } from '../../storage/accounts.js'
import { registrationTokenValid } from '../../storage/registration-tokens.js'
import { createAccount } from '../account-sessions.js'
import { clientRoute } from '../client-route.js'
import { MatrixError } from '../errors.js'
import { authDictSchema, requireRegistrationAuth, type AuthDict } from '../user-interactive-auth.js'
import { checkLocalpart, userIdOf } from '../user-ids.js'

/**
 * `POST /register` and `GET /register/available`.
 *
 * Registration is user-interactive with a single stage, `m.login.dummy`, or
 * `m.login.registration_token` with `registration.requires_token` (a token a server admin made,
 * used once by the registration it allows; `GET /v1/register/m.login.registration_token/validity`
 * tells whether one may be used): the first call (without `auth`) answers 401 with the flow, the
 * second (with the stage's `auth`) registers. The username is checked before that 401, so clients learn about `M_USER_IN_USE`
 * and `M_INVALID_USERNAME` first. `registration.enabled: false` closes both endpoints (403);
 * the shared-secret admin API (admin-register.ts) still works. A password is required (as
 * Synapse: an account without one could never log in again). Guests are not supported.
 */

interface RegisterBody {
  auth?: AuthDict
  username?: string
  password?: string
  device_id?: string
  initial_device_display_name?: string
  inhibit_login?: boolean
  refresh_token?: boolean
}

export const maxPasswordLength = 512

const registerSchema = {
  querystring: { type: 'object', properties: { kind: { type: 'string', enum: ['user', 'guest'] } } },
  body: {
    type: 'object',
    properties: {
      auth: authDictSchema,
      username: { type: 'string', maxLength: 255 },
      password: { type: 'string', maxLength: maxPasswordLength },
      device_id: { type: 'string', minLength: 1, maxLength: 255 },
      initial_device_display_name: { type: 'string', maxLength: 255 },
      inhibit_login: { type: 'boolean' },
      refresh_token: { type: 'boolean' },
    },
  },
} as const

function generatedLocalpart(): string {
  return `u${randomAlphanumeric(12).toLowerCase()}`
}

export const registerRoutes: FastifyPluginAsync = async (app) => {
  const { config } = app.myelin
  const closed = () => new MatrixError(403, 'M_FORBIDDEN', 'Registration has been disabled')

  clientRoute<{ Body: RegisterBody; Querystring: { kind?: 'user' | 'guest' } }>(app, {
    method: 'POST',
    path: '/register',
    schema: registerSchema,
    handler: async (request) => {
      if (request.query.kind === 'guest') throw new MatrixError(403, 'M_GUEST_ACCESS_FORBIDDEN', 'Guest access is disabled')
      if (!config.registration.enabled) throw closed()
      const body = request.body
      const localpart = body.username === undefined || body.username === '' ? generatedLocalpart() : body.username
      checkLocalpart(localpart, config.server_name)
      if (await getUser(app.myelin.db, userIdOf(localpart, config.server_name))) {
        throw new MatrixError(400, 'M_USER_IN_USE', 'User ID already taken')
      }
      if (body.password === undefined) throw new MatrixError(400, 'M_MISSING_PARAM', 'Missing params: password')
      const stage = requireRegistrationAuth(body.auth, config.registration.requires_token)
      return createAccount(app.myelin, {
        ...(stage.token !== undefined && { registrationToken: { token: stage.token, session: stage.session } }),
        localpart,
        password: body.password,
        ...(body.device_id !== undefined && { deviceId: body.device_id }),
        ...(body.initial_device_display_name !== undefined && { deviceDisplayName: body.initial_device_display_name }),
        inhibitLogin: body.inhibit_login === true,
      })
    },
  })

  // Whether a registration token may be used (spec v1.2), asked before signing up. Tokens are
  // random and long enough that asking cannot enumerate them in practice.
  clientRoute<{ Querystring: { token: string } }>(app, {
    method: 'GET',
    path: '/register/m.login.registration_token/validity',
    versions: ['v1'],
    schema: { querystring: { type: 'object', required: ['token'], properties: { token: { type: 'string', minLength: 1, maxLength: 64 } } } },
    handler: async (request) => {
      if (!config.registration.enabled || !config.registration.requires_token) throw new MatrixError(403, 'M_FORBIDDEN', 'Registration tokens are not in use')
      return { valid: await registrationTokenValid(app.myelin.db, request.query.token, app.myelin.clock()) }
    },
  })

  clientRoute<{ Querystring: { username: string } }>(app, {
    method: 'GET',
    path: '/register/available',
    schema: { querystring: { type: 'object', required: ['username'], properties: { username: { type: 'string', maxLength: 255 } } } },
    handler: async (request) => {
      if (!config.registration.enabled) throw closed()
      checkLocalpart(request.query.username, config.server_name)
      if (await getUser(app.myelin.db, userIdOf(request.query.username, config.server_name))) {
        throw new MatrixError(400, 'M_USER_IN_USE', 'User ID already taken')
      }
      return { available: true }
    },
  })
}
