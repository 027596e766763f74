import type { FastifyPluginAsync } from 'fastify'
import { sendToDevice, type ToDeviceMessages } from '../../storage/to-device.js'
import { clientRoute } from '../client-route.js'
import { forbidden, invalidParam } from '../errors.js'
import { requireUser } from '../require-user.js'
import { isUserId, serverNameOf } from '../room-ids.js'

/**
 * `PUT /sendToDevice/{eventType}/{txnId}` (client-server API "Send-to-Device messaging"):
 * `messages` maps user IDs to device IDs (or `*`, every device of the user) to the content of
 * an `eventType` event. Each device receives its message in /sync `to_device` (storage/to-device.ts).
 * A repeated transaction ID of the same device sends nothing again. Devices that do not exist
 * are skipped; a malformed user ID is 400, a user of another server 403 (no federation), and
 * then nothing is sent.
 */

const params = {
  type: 'object',
  required: ['eventType', 'txnId'],
  properties: { eventType: { type: 'string', minLength: 1, maxLength: 255 }, txnId: { type: 'string', minLength: 1, maxLength: 255 } },
} as const
const body = {
  type: 'object',
  required: ['messages'],
  properties: {
    messages: { type: 'object', additionalProperties: { type: 'object', additionalProperties: { type: 'object' } } },
  },
} as const

export const toDeviceRoutes: FastifyPluginAsync = async (app) => {
  const { db, config, clock } = app.myelin
  clientRoute<{ Params: { eventType: string; txnId: string }; Body: { messages: ToDeviceMessages } }>(app, {
    method: 'PUT',
    path: '/sendToDevice/:eventType/:txnId',
    schema: { params, body },
    handler: async (request) => {
      const { userId, deviceId } = await requireUser(request)
      for (const target of Object.keys(request.body.messages)) {
        if (!isUserId(target)) throw invalidParam(`${JSON.stringify(target.slice(0, 300))} is not a user ID`)
        if (serverNameOf(target) !== config.server_name) throw forbidden(`Cannot send to ${target}: federation is not supported`)
      }
      const { eventType, txnId } = request.params
      await sendToDevice(db, { sender: userId, senderDevice: deviceId, txnId, type: eventType, messages: request.body.messages, now: clock() })
      return {}
    },
  })
}
