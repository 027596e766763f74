import type { FastifyPluginAsync } from 'fastify'
import { deleteMedia, deleteMediaBefore, mediaIdsInRoom, mediaInfo, setProtected, setQuarantine } from '../../storage/media.js'
import { MatrixError, notFound } from '../errors.js'
import { checkRoomId } from '../room-ids.js'
import { adminUsersOf, boolString, idParam, roomParams, userParams } from './admin-common.js'
import { requireAdmin } from '../require-user.js'

/**
 * Synapse's admin API for media moderation and retention (admin.ts lists every admin route):
 * - `GET /_synapse/admin/v1/media/{serverName}/{mediaId}` → `{media_info}`; `DELETE` deletes the
 *   file → `{deleted_media, total}`;
 * - `POST /_synapse/admin/v1/media/quarantine/{serverName}/{mediaId}` and
 *   `…/media/unquarantine/{serverName}/{mediaId}`: a quarantined file is no longer served
 *   (downloads and thumbnails answer 404), and stays stored for the admin to look at;
 * - `POST /_synapse/admin/v1/room/{roomId}/media/quarantine` (and Synapse's older
 *   `…/quarantine_media/{roomId}`): every file of this server the room's events name;
 *   `POST /_synapse/admin/v1/user/{userId}/media/quarantine`: every file the user uploaded.
 *   Both answer `{num_quarantined}`;
 * - `POST /_synapse/admin/v1/media/protect/{mediaId}` and `…/unprotect/{mediaId}`: a protected
 *   file is passed by every quarantine and by retention deletes;
 * - `POST /_synapse/admin/v1/media/delete?before_ts=&size_gt=&keep_profiles=` (and
 *   `…/media/{serverName}/delete`): deletes the files uploaded before `before_ts` (ms, required),
 *   larger than `size_gt` bytes (default 0), except, with `keep_profiles` (default true), those
 *   used as a user's or a room's avatar → `{deleted_media, total}`.
 * Files of other servers: 400 `M_INVALID_PARAM` (this server keeps no remote media).
 */
export const adminMediaRoutes: FastifyPluginAsync = async (app) => {
  const { db } = app.myelin
  const serverName = app.myelin.config.server_name
  const { existingUser } = adminUsersOf(app)
  const fileParams = { type: 'object', required: ['serverName', 'mediaId'], properties: { serverName: idParam, mediaId: idParam } } as const
  const localFile = (params: { serverName: string }) => {
    if (params.serverName !== serverName) throw new MatrixError(400, 'M_INVALID_PARAM', 'Only local media can be managed')
  }

  app.get<{ Params: { serverName: string; mediaId: string } }>('/_synapse/admin/v1/media/:serverName/:mediaId', { schema: { params: fileParams } }, async (request) => {
    await requireAdmin(request)
    localFile(request.params)
    const info = await mediaInfo(db, request.params.mediaId)
    if (info === undefined) throw notFound('Unknown media')
    return { media_info: info }
  })

  app.delete<{ Params: { serverName: string; mediaId: string } }>('/_synapse/admin/v1/media/:serverName/:mediaId', { schema: { params: fileParams } }, async (request) => {
    await requireAdmin(request)
    localFile(request.params)
    const deleted = await deleteMedia(db, { mediaId: request.params.mediaId })
    if (deleted.length === 0) throw notFound('Unknown media')
    return { deleted_media: deleted, total: deleted.length }
  })

  for (const [action, quarantine] of [['quarantine', true], ['unquarantine', false]] as const) {
    app.post<{ Params: { serverName: string; mediaId: string } }>(`/_synapse/admin/v1/media/${action}/:serverName/:mediaId`, { schema: { params: fileParams } }, async (request) => {
      const { userId } = await requireAdmin(request)
      localFile(request.params)
      const { mediaId } = request.params
      if ((await mediaInfo(db, mediaId)) === undefined) throw notFound('Unknown media')
      const changed = await setQuarantine(db, { mediaId }, quarantine ? userId : null)
      request.log.info({ mediaId, changed }, quarantine ? 'admin quarantined media' : 'admin lifted a media quarantine')
      return {}
    })
  }

  for (const path of ['/_synapse/admin/v1/room/:roomId/media/quarantine', '/_synapse/admin/v1/quarantine_media/:roomId']) {
    app.post<{ Params: { roomId: string } }>(path, { schema: { params: roomParams } }, async (request) => {
      const { userId } = await requireAdmin(request)
      const roomId = checkRoomId(request.params.roomId)
      const quarantined = await setQuarantine(db, { mediaIds: await mediaIdsInRoom(db, roomId, serverName) }, userId)
      request.log.info({ roomId, quarantined }, "admin quarantined a room's media")
      return { num_quarantined: quarantined }
    })
  }

  app.post<{ Params: { userId: string } }>('/_synapse/admin/v1/user/:userId/media/quarantine', { schema: { params: userParams } }, async (request) => {
    const { userId: admin } = await requireAdmin(request)
    const quarantined = await setQuarantine(db, { userId: await existingUser(request.params.userId) }, admin)
    request.log.info({ quarantined }, "admin quarantined a user's media")
    return { num_quarantined: quarantined }
  })

  for (const [action, safe] of [['protect', true], ['unprotect', false]] as const) {
    app.post<{ Params: { mediaId: string } }>(`/_synapse/admin/v1/media/${action}/:mediaId`, { schema: { params: { type: 'object', required: ['mediaId'], properties: { mediaId: idParam } } } }, async (request) => {
      await requireAdmin(request)
      if (!(await setProtected(db, request.params.mediaId, safe))) throw notFound('Unknown media')
      return {}
    })
  }

  const deleteQuery = {
    type: 'object',
    required: ['before_ts'],
    properties: { before_ts: { type: 'string', pattern: '^[0-9]{1,15}$' }, size_gt: { type: 'string', pattern: '^[0-9]{1,15}$' }, keep_profiles: boolString },
  } as const
  for (const path of ['/_synapse/admin/v1/media/delete', '/_synapse/admin/v1/media/:serverName/delete']) {
    app.post<{ Params: { serverName?: string }; Querystring: { before_ts: string; size_gt?: string; keep_profiles?: 'true' | 'false' } }>(
      path,
      { schema: { querystring: deleteQuery } },
      async (request) => {
        await requireAdmin(request)
        if (request.params.serverName !== undefined) localFile({ serverName: request.params.serverName })
        const deleted = await deleteMediaBefore(db, {
          beforeTs: Number(request.query.before_ts),
          sizeGt: Number(request.query.size_gt ?? '0'),
          keepProfiles: request.query.keep_profiles !== 'false',
          serverName,
        })
        request.log.info({ files: deleted.length, beforeTs: Number(request.query.before_ts) }, 'admin deleted old media')
        return { deleted_media: deleted, total: deleted.length }
      },
    )
  }
}
