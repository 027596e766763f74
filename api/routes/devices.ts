import type { FastifyPluginAsync } from 'fastify'
import { deleteDevices, getDevice, listDevices, setDeviceDisplayName, type Device } from '../../storage/accounts.js'
import { clientRoute, emptyBodyAsObject } from '../client-route.js'
import { notFound } from '../errors.js'
import { requireUser } from '../require-user.js'
import { authDictSchema, requirePasswordAuth, type AuthDict } from '../user-interactive-auth.js'

/**
 * `GET /devices`, `GET|PUT|DELETE /devices/{deviceId}`, `POST /delete_devices`. Deleting needs
 * user-interactive `m.login.password` and revokes the devices' tokens at once (in this process;
 * in others within about a second, see api/authenticator.ts).
 */

function deviceJson(device: Device) {
  return { device_id: device.deviceId, display_name: device.displayName, last_seen_ip: null, last_seen_ts: device.lastSeenTs }
}

const deviceParams = {
  type: 'object',
  required: ['deviceId'],
  properties: { deviceId: { type: 'string', minLength: 1, maxLength: 255 } },
} as const

export const deviceRoutes: FastifyPluginAsync = async (app) => {
  const runtime = app.myelin

  clientRoute(app, {
    method: 'GET',
    path: '/devices',
    schema: {},
    handler: async (request) => {
      const { userId } = await requireUser(request)
      return { devices: (await listDevices(runtime.db, userId)).map(deviceJson) }
    },
  })

  clientRoute<{ Params: { deviceId: string } }>(app, {
    method: 'GET',
    path: '/devices/:deviceId',
    schema: { params: deviceParams },
    handler: async (request) => {
      const { userId } = await requireUser(request)
      const device = await getDevice(runtime.db, userId, request.params.deviceId)
      if (!device) throw notFound('No such device')
      return deviceJson(device)
    },
  })

  clientRoute<{ Params: { deviceId: string }; Body: { display_name?: string | null } }>(app, {
    method: 'PUT',
    path: '/devices/:deviceId',
    schema: {
      params: deviceParams,
      body: { type: 'object', properties: { display_name: { type: ['string', 'null'], maxLength: 255 } } },
    },
    handler: async (request) => {
      const { userId } = await requireUser(request)
      const displayName = request.body.display_name
      if (displayName === undefined) {
        if (!(await getDevice(runtime.db, userId, request.params.deviceId))) throw notFound('No such device')
        return {}
      }
      if (!(await setDeviceDisplayName(runtime.db, userId, request.params.deviceId, displayName))) throw notFound('No such device')
      return {}
    },
  })

  clientRoute<{ Params: { deviceId: string }; Body: { auth?: AuthDict } }>(app, {
    method: 'DELETE',
    path: '/devices/:deviceId',
    preValidation: emptyBodyAsObject,
    schema: { params: deviceParams, body: { type: 'object', properties: { auth: authDictSchema } } },
    handler: async (request) => {
      const requester = await requireUser(request)
      if (!(await getDevice(runtime.db, requester.userId, request.params.deviceId))) throw notFound('No such device')
      await requirePasswordAuth(runtime, requester, request.body.auth)
      await deleteDevices(runtime.db, requester.userId, [request.params.deviceId])
      runtime.auth.forget({ userId: requester.userId, deviceIds: [request.params.deviceId] })
      return {}
    },
  })

  clientRoute<{ Body: { devices: string[]; auth?: AuthDict } }>(app, {
    method: 'POST',
    path: '/delete_devices',
    schema: {
      body: {
        type: 'object',
        required: ['devices'],
        properties: {
          devices: { type: 'array', maxItems: 1000, items: { type: 'string', minLength: 1, maxLength: 255 } },
          auth: authDictSchema,
        },
      },
    },
    handler: async (request) => {
      const requester = await requireUser(request)
      await requirePasswordAuth(runtime, requester, request.body.auth)
      await deleteDevices(runtime.db, requester.userId, request.body.devices)
      runtime.auth.forget({ userId: requester.userId, deviceIds: request.body.devices })
      return {}
    },
  })
}
