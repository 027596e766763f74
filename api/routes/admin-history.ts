import type { FastifyPluginAsync } from 'fastify'
import { randomAlphanumeric } from '../../storage/access-token.js'
import { failHistoryPurge, historyPurge, purgeDepth, runHistoryPurge, startHistoryPurge, unfinishedHistoryPurges, type PurgePoint } from '../../storage/history-purge.js'
import { getRoomHead } from '../../storage/events/event-store.js'
import { MatrixError, notFound } from '../errors.js'
import { requireAdmin } from '../require-user.js'
import { resumableJobs } from '../resumable-jobs.js'
import { purgedEventsCounter } from '../retention.js'
import { checkRoomId } from '../room-ids.js'
import { idParam } from './admin-common.js'

/**
 * Synapse's purge history admin API (admin.ts lists every admin route), to reclaim the space of a
 * room's old events (storage/history-purge.ts says what goes and what stays):
 * - `POST /_synapse/admin/v1/purge_history/{roomId}[/{eventId}]` with `{delete_local_events,
 *   purge_up_to_event_id, purge_up_to_ts}`: the point is the event in the path or the body, or
 *   the first event sent at or after `purge_up_to_ts` (ms). Answers `{purge_id}` at once; the
 *   purge goes on in this process. Without `delete_local_events: true` the events of this
 *   server's users stay, as in Synapse.
 * - `GET /_synapse/admin/v1/purge_history_status/{purgeId}` → `{status: active|complete|failed}`
 *   (and `error`, `deleted`), from any api worker. A purge whose process stopped resumes where
 *   it got to: at the next start of an api worker, within a minute, or when its status is asked.
 */
export const adminHistoryRoutes: FastifyPluginAsync = async (app) => {
  const { db, config, metrics } = app.myelin
  const purgedEvents = purgedEventsCounter(metrics)
  const purges = resumableJobs(app, {
    what: 'history purge',
    unfinished: () => unfinishedHistoryPurges(db),
    work: async (purgeId, log) => {
      try {
        const ran = await runHistoryPurge(db, purgeId, { localServer: config.server_name, shouldStop: () => purges.closing, onChunk: (deleted) => purgedEvents.inc(deleted) })
        if (ran) log.info({ purgeId, ...(await historyPurge(db, purgeId)) }, purges.closing ? 'history purge paused by the shutdown' : 'history purge finished')
      } catch (err) {
        if (purges.closing) return log.warn({ err, purgeId }, 'history purge interrupted by the shutdown; it resumes later')
        log.error({ err, purgeId }, 'history purge failed')
        await failHistoryPurge(db, purgeId, err instanceof Error ? err.message : String(err)).catch((e: unknown) => log.error({ err: e }, 'could not record a failed history purge'))
      }
    },
  })

  const purgeParams = { type: 'object', required: ['roomId'], properties: { roomId: idParam, eventId: idParam } } as const
  const purgeBody = {
    type: ['object', 'null'],
    properties: {
      delete_local_events: { type: 'boolean' },
      purge_up_to_event_id: { type: 'string', minLength: 1, maxLength: 255 },
      purge_up_to_ts: { type: 'integer', minimum: 0 },
    },
  } as const
  for (const url of ['/_synapse/admin/v1/purge_history/:roomId', '/_synapse/admin/v1/purge_history/:roomId/:eventId']) {
    app.post<{ Params: { roomId: string; eventId?: string }; Body: { delete_local_events?: boolean; purge_up_to_event_id?: string; purge_up_to_ts?: number } | null }>(
      url,
      { schema: { params: purgeParams, body: purgeBody } },
      async (request) => {
        const { userId: adminId } = await requireAdmin(request)
        const roomId = checkRoomId(request.params.roomId)
        const body = request.body ?? {}
        const eventId = request.params.eventId ?? body.purge_up_to_event_id
        const point: PurgePoint | undefined = eventId !== undefined ? { eventId } : body.purge_up_to_ts !== undefined ? { ts: body.purge_up_to_ts } : undefined
        if (point === undefined) throw new MatrixError(400, 'M_MISSING_PARAM', 'Give the point to purge up to: an event ID, purge_up_to_event_id or purge_up_to_ts')
        if ((await getRoomHead(db, roomId)) === undefined) throw notFound('Room not found')
        const upToDepth = await purgeDepth(db, roomId, point)
        if (upToDepth === undefined) throw notFound('Event not found in the room')
        const purgeId = randomAlphanumeric(16)
        const deleteLocalEvents = body.delete_local_events === true
        await startHistoryPurge(db, { purgeId, roomId, upToDepth, deleteLocalEvents, now: app.myelin.clock() })
        request.log.info({ purgeId, roomId, adminId, upToDepth: String(upToDepth), deleteLocalEvents }, 'admin started a history purge')
        void purges.run(purgeId, request.log.child({ purgeId }))
        return { purge_id: purgeId }
      },
    )
  }

  app.get<{ Params: { purgeId: string } }>(
    '/_synapse/admin/v1/purge_history_status/:purgeId',
    { schema: { params: { type: 'object', required: ['purgeId'], properties: { purgeId: idParam } } } },
    async (request) => {
      await requireAdmin(request)
      const purge = await historyPurge(db, request.params.purgeId)
      if (purge === undefined) throw notFound('Unknown purge')
      if (purge.status === 'active' && !purges.closing) void purges.run(purge.purgeId, request.log.child({ purgeId: purge.purgeId }))
      return { status: purge.status, deleted: purge.deleted, ...(purge.error !== undefined && { error: purge.error }) }
    },
  )
}
