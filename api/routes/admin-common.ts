import type { FastifyInstance } from 'fastify'
import { getUser } from '../../storage/accounts.js'
import { MatrixError, notFound } from '../errors.js'
import { checkUserId, serverNameOf } from '../room-ids.js'

/** What the admin API's account routes (admin-users.ts) and room routes (admin-rooms.ts) share. */

export const idParam = { type: 'string', minLength: 1, maxLength: 2048 } as const
export const userParams = { type: 'object', required: ['userId'], properties: { userId: idParam } } as const
export const roomParams = { type: 'object', required: ['roomId'], properties: { roomId: idParam } } as const
export const boolString = { type: 'string', enum: ['true', 'false'] } as const
export const offsetString = { type: 'string', pattern: '^[0-9]{1,9}$' } as const
export const limitString = { type: 'string', pattern: '^[1-9][0-9]{0,5}$' } as const

/** A page's `from`: an offset, 0 by default. */
export function pageOffset(raw: string | undefined): number {
  return raw === undefined ? 0 : Number(raw)
}

/** A page's `limit`: 100 by default, at most 1,000. */
export function pageLimit(raw: string | undefined): number {
  return Math.min(raw === undefined ? 100 : Number(raw), 1000)
}

/** The user checks both route sets use, over one app's runtime. */
export function adminUsersOf(app: FastifyInstance) {
  const { db } = app.myelin
  const serverName = app.myelin.config.server_name
  /** A local user ID (400 otherwise: the admin API manages this server's accounts). */
  const localUserId = (raw: string) => {
    const userId = checkUserId(raw)
    if (serverNameOf(userId) !== serverName) throw new MatrixError(400, 'M_INVALID_PARAM', 'Can only manage local users')
    return userId
  }
  /** The account of a local user who exists (404 otherwise). */
  const existingAccount = async (raw: string) => {
    const user = await getUser(db, localUserId(raw))
    if (user === undefined) throw notFound('User not found')
    return user
  }
  /** A local user who exists (404 otherwise). */
  const existingUser = async (raw: string) => (await existingAccount(raw)).userId
  return { localUserId, existingAccount, existingUser }
}
