import type { FastifyPluginAsync } from 'fastify'
import { StorageError } from '../../storage/errors.js'
import { addReport, deleteReport, reportById, reportsPage } from '../../storage/reports.js'
import { eventForUser } from '../../storage/room-reads.js'
import { clientRoute } from '../client-route.js'
import { notFound } from '../errors.js'
import { requireAdmin, requireUser } from '../require-user.js'
import { checkRoomId } from '../room-ids.js'
import type { RoomServices } from '../room-services.js'
import { limitString, offsetString, pageLimit, pageOffset } from './admin-common.js'

/**
 * Reporting content (client-server API), over storage/reports.ts:
 * - `POST /rooms/{roomId}/report/{eventId}` (`reason`, `score` from -100 to 0): an event the
 *   reporter may see; one they may not (or that does not exist, or a room they cannot read) is
 *   404 `M_NOT_FOUND` alike, so a report reveals nothing.
 * - `POST /rooms/{roomId}/report` (`reason`): a room this server knows, member or not (an
 *   invite to an abusive room can be reported), else 404.
 * - `GET /_synapse/admin/v1/event_reports` (`from`, `limit` (default 100, at most 1,000),
 *   `dir` `b` (newest first, the default) or `f`, `room_id`, `user_id`), Synapse's admin API:
 *   server admins only (`users.admin`, set by the shared-secret registration), 403 otherwise;
 * - `GET /_synapse/admin/v1/event_reports/{reportId}` (with the reported event, `event_json`) and
 *   `DELETE …/{reportId}` (a handled report), admins only too.
 */

const reason = { type: 'string', maxLength: 10_000 } as const
const id = { type: 'string', minLength: 1, maxLength: 2048 } as const

export function reportRoutes(services: RoomServices): FastifyPluginAsync {
  const { tracker } = services
  return async (app) => {
    const { db, clock } = app.myelin

    clientRoute<{ Params: { roomId: string; eventId: string }; Body: { reason?: string; score?: number } }>(app, {
      method: 'POST',
      path: '/rooms/:roomId/report/:eventId',
      schema: {
        params: { type: 'object', required: ['roomId', 'eventId'], properties: { roomId: id, eventId: id } },
        body: { type: 'object', properties: { reason, score: { type: 'integer', minimum: -100, maximum: 0 } } },
      },
      handler: async (request) => {
        const { userId, deviceId } = await requireUser(request)
        const { roomId, eventId } = request.params
        checkRoomId(roomId)
        try {
          await eventForUser(db, roomId, eventId, { userId, deviceId }, tracker.currentToken(), clock())
        } catch (err) {
          if (err instanceof StorageError && (err.code === 'ES_FORBIDDEN' || err.code === 'ES_ROOM_NOT_FOUND' || err.code === 'ES_EVENT_NOT_FOUND')) {
            throw notFound('Unable to report event: it does not exist or you aren\u2019t able to see it.')
          }
          throw err
        }
        const { reason: text, score } = request.body ?? {}
        await addReport(db, { roomId, eventId, userId, ...(text !== undefined && { reason: text }), ...(score !== undefined && { score }), now: clock() })
        return {}
      },
    })

    clientRoute<{ Params: { roomId: string }; Body: { reason?: string } }>(app, {
      method: 'POST',
      path: '/rooms/:roomId/report',
      schema: {
        params: { type: 'object', required: ['roomId'], properties: { roomId: id } },
        body: { type: 'object', properties: { reason } },
      },
      handler: async (request) => {
        const { userId } = await requireUser(request)
        const { roomId } = request.params
        checkRoomId(roomId)
        const known = await db.selectFrom('rooms').select('room_id').where('room_id', '=', roomId).executeTakeFirst()
        if (known === undefined) throw notFound('Room not found')
        const text = request.body?.reason
        await addReport(db, { roomId, userId, ...(text !== undefined && { reason: text }), now: clock() })
        return {}
      },
    })

    app.route<{ Querystring: { from?: string; limit?: string; dir?: 'b' | 'f'; room_id?: string; user_id?: string } }>({
      method: 'GET',
      url: '/_synapse/admin/v1/event_reports',
      schema: {
        querystring: {
          type: 'object',
          properties: {
            from: offsetString,
            limit: limitString,
            dir: { type: 'string', enum: ['b', 'f'] },
            room_id: id,
            user_id: id,
          },
        },
      },
      handler: async (request) => {
        await requireAdmin(request)
        const q = request.query
        return reportsPage(db, {
          from: pageOffset(q.from),
          limit: pageLimit(q.limit),
          dir: q.dir ?? 'b',
          ...(q.room_id !== undefined && { roomId: q.room_id }),
          ...(q.user_id !== undefined && { userId: q.user_id }),
        })
      },
    })

    const reportParams = { type: 'object', required: ['reportId'], properties: { reportId: { type: 'string', pattern: '^[0-9]{1,15}$' } } } as const

    app.route<{ Params: { reportId: string } }>({
      method: 'GET',
      url: '/_synapse/admin/v1/event_reports/:reportId',
      schema: { params: reportParams },
      handler: async (request) => {
        await requireAdmin(request)
        const report = await reportById(db, Number(request.params.reportId))
        if (report === undefined) throw notFound('Event report not found')
        return report
      },
    })

    app.route<{ Params: { reportId: string } }>({
      method: 'DELETE',
      url: '/_synapse/admin/v1/event_reports/:reportId',
      schema: { params: reportParams },
      handler: async (request) => {
        await requireAdmin(request)
        if (!(await deleteReport(db, Number(request.params.reportId)))) throw notFound('Event report not found')
        return {}
      },
    })
  }
}
