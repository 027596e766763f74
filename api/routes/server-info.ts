import type { FastifyPluginAsync } from 'fastify'
import { supportedRoomVersions } from '../../persisters/auth-rules.js'
import { clientRoute } from '../client-route.js'
import { requireUser } from '../require-user.js'

/**
 * What clients ask at start-up about the server: `GET /_matrix/client/versions` (no auth; its
 * `unstable_features` announce sliding sync),
 * `GET /capabilities`, `GET /voip/turnServer` (no TURN server: `{}`, as Synapse without one),
 * `GET /thirdparty/protocols` (no bridges: `{}`).
 */

/** Spec versions announced by `/versions`. */
export const specVersions = [
  'r0.0.1', 'r0.1.0', 'r0.2.0', 'r0.3.0', 'r0.4.0', 'r0.5.0', 'r0.6.0', 'r0.6.1',
  'v1.1', 'v1.2', 'v1.3', 'v1.4', 'v1.5', 'v1.6', 'v1.7', 'v1.8', 'v1.9', 'v1.10', 'v1.11',
] as const

/**
 * Unstable features announced by `/versions`: simplified sliding sync (MSC4186,
 * api/routes/sliding-sync.ts), which matrix-rust-sdk clients (Element X) look for.
 */
export const unstableFeatures = { 'org.matrix.simplified_msc3575': true } as const

/** The room version `/createRoom` uses when the client names none. */
export const defaultRoomVersion = '11'

export const serverInfoRoutes: FastifyPluginAsync = async (app) => {
  app.get('/_matrix/client/versions', { schema: {} }, async () => ({ versions: specVersions, unstable_features: unstableFeatures }))

  clientRoute(app, {
    method: 'GET',
    path: '/capabilities',
    schema: {},
    handler: async (request) => {
      await requireUser(request)
      return {
        capabilities: {
          'm.change_password': { enabled: true },
          'm.room_versions': {
            default: defaultRoomVersion,
            available: Object.fromEntries(supportedRoomVersions.map((v) => [v, 'stable'])),
          },
          'm.set_displayname': { enabled: true },
          'm.set_avatar_url': { enabled: true },
          'm.3pid_changes': { enabled: false },
        },
      }
    },
  })

  clientRoute(app, {
    method: 'GET',
    path: '/voip/turnServer',
    versions: ['v3', 'r0', 'api/v1'],
    schema: {},
    handler: async (request) => {
      await requireUser(request)
      return {}
    },
  })

  clientRoute(app, {
    method: 'GET',
    path: '/thirdparty/protocols',
    schema: {},
    handler: async (request) => {
      await requireUser(request)
      return {}
    },
  })
}
