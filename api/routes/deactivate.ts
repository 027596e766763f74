import { randomUUID } from 'node:crypto'
import type { FastifyPluginAsync } from 'fastify'
import { deactivateUser } from '../../storage/accounts.js'
import { stopTypingOfDeparted } from '../../storage/typing.js'
import { clientRoute } from '../client-route.js'
import type { ApiRuntime } from '../context.js'
import { requireUser } from '../require-user.js'
import type { RoomServices } from '../room-services.js'
import { authDictSchema, requirePasswordAuth, type AuthDict } from '../user-interactive-auth.js'

/**
 * `POST /account/deactivate` (user-interactive `m.login.password`): the account's owner closes
 * it for good, as Synapse does:
 *
 * 1. the user leaves every room they are joined to, invited to or knocking on, and stops typing
 *    there (a leave event each, through the rooms' persisters; one failing answers its error, 503 when the persister
 *    is unavailable, and nothing further happens: the request can be repeated);
 * 2. then the account is deactivated (storage/accounts.ts `deactivateUser`): no login, every
 *    device and token gone; with `erase`, the display name and avatar too.
 *
 * Answers `{ id_server_unbind_result: 'no-support' }`: Myelin binds no third-party identifiers.
 */

interface DeactivateBody {
  auth?: AuthDict
  erase?: boolean
  id_server?: string
}

const deactivateBody = {
  type: 'object',
  properties: { auth: authDictSchema, erase: { type: 'boolean' }, id_server: { type: 'string', maxLength: 255 } },
} as const

/**
 * The deactivation route over an api process's room services (it sends leave events).
 *
 * @example
 * const app = await buildApp(ctx, { plugins: [deactivateRoutes(services)] })
 */
export function deactivateRoutes(services: RoomServices): FastifyPluginAsync {
  return async (app) => {
    const runtime = app.myelin
    clientRoute<{ Body: DeactivateBody }>(app, {
      method: 'POST',
      path: '/account/deactivate',
      schema: { body: deactivateBody },
      handler: async (request) => {
        const requester = await requireUser(request)
        await requirePasswordAuth(runtime, requester, request.body.auth)
        const { rooms, devices } = await closeAccount(runtime, services, requester.userId, { erase: request.body.erase === true })
        request.log.info({ rooms, devices }, 'account deactivated')
        return { id_server_unbind_result: 'no-support' }
      },
    })
  }
}

/**
 * Closes `userId`'s account (steps 1 and 2 above): leaves every room they are joined to,
 * invited to or knocking on, then deactivates it. Shared by `/account/deactivate` and the admin
 * API's deactivation.
 *
 * @returns how many rooms were left and devices deleted.
 * @example
 * await closeAccount(app.myelin, services, '@alice:example.org', { erase: false }) // { rooms: 2, devices: 1 }
 */
export async function closeAccount(runtime: ApiRuntime, services: RoomServices, userId: string, options: { erase: boolean }): Promise<{ rooms: number; devices: number }> {
  const rooms = await runtime.db
    .selectFrom('current_state_events')
    .select('room_id')
    .where('type', '=', 'm.room.member')
    .where('state_key', '=', userId)
    .where('membership', 'in', ['join', 'invite', 'knock'])
    .orderBy('room_id')
    .execute()
  for (const { room_id: roomId } of rooms) await leaveRoom(runtime, services, roomId, userId)
  const deviceIds = await deactivateUser(runtime.db, userId, { erase: options.erase })
  runtime.auth.forget({ userId, deviceIds })
  return { rooms: rooms.length, devices: deviceIds.length }
}

/**
 * `userId` (a local user) leaves `roomId` (or turns down an invite, or withdraws a knock), the
 * server acting for them, and stops typing there.
 *
 * @example
 * await leaveRoom(app.myelin, services, '!r:example.org', '@alice:example.org')
 */
export async function leaveRoom(runtime: ApiRuntime, services: RoomServices, roomId: string, userId: string): Promise<void> {
  const leave = { type: 'm.room.member', state_key: userId, sender: userId, content: { membership: 'leave' } }
  await services.sender.send({ requestId: randomUUID(), roomId, events: [leave] })
  await stopTypingOfDeparted(runtime.db, roomId, [leave], runtime.clock())
}
