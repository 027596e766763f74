import type { FastifyRequest } from 'fastify'
import { getUser, type Requester } from '../storage/accounts.js'
import { MatrixError } from './errors.js'

/**
 * The access token of a request: `Authorization: Bearer <token>` or `?access_token=`, not both
 * (as Synapse). A malformed Authorization header counts as a missing token.
 *
 * @example
 * accessTokenOf(request) // 'syt_…' | undefined
 */
export function accessTokenOf(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization
  const query = request.query as Record<string, unknown> | undefined
  const fromQuery = typeof query?.access_token === 'string' && query.access_token !== '' ? query.access_token : undefined
  if (header === undefined) return fromQuery
  if (fromQuery !== undefined) {
    throw new MatrixError(400, 'M_MISSING_TOKEN', 'Mixing Authorization headers and access_token query parameters')
  }
  const match = /^Bearer +(\S+) *$/.exec(header)
  if (!match?.[1]) throw new MatrixError(401, 'M_MISSING_TOKEN', 'Invalid Authorization header')
  return match[1]
}

/**
 * The authenticated requester of `request`: 401 `M_MISSING_TOKEN` without a token, 401
 * `M_UNKNOWN_TOKEN` (`soft_logout: false`) for an unknown or revoked one. Memoized per request,
 * so hooks and handlers may all call it.
 *
 * @example
 * app.get('/_matrix/client/v3/joined_rooms', async (request) => {
 *   const { userId } = await requireUser(request)
 *   return { joined_rooms: await joinedRooms(request.server.myelin.db, userId) }
 * })
 */
export async function requireUser(request: FastifyRequest): Promise<Requester> {
  if (request.myelinRequester) return request.myelinRequester
  const token = accessTokenOf(request)
  if (token === undefined) throw new MatrixError(401, 'M_MISSING_TOKEN', 'Missing access token')
  const requester = await request.server.myelin.auth.authenticate(token)
  if (!requester) throw new MatrixError(401, 'M_UNKNOWN_TOKEN', 'Unknown or expired access token', { soft_logout: false })
  request.myelinRequester = requester
  return requester
}

/**
 * Like `requireUser`, and 403 `M_FORBIDDEN` unless the requester is a server admin
 * (`users.admin`): the gate of Synapse's admin API (`/_synapse/admin/…`).
 *
 * @example
 * const { userId } = await requireAdmin(request)
 */
export async function requireAdmin(request: FastifyRequest): Promise<Requester> {
  const requester = await requireUser(request)
  if ((await getUser(request.server.myelin.db, requester.userId))?.admin !== true) throw new MatrixError(403, 'M_FORBIDDEN', 'You are not a server admin')
  return requester
}
