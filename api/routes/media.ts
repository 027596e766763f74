import type { FastifyPluginAsync, FastifyReply } from 'fastify'
import { readMedia, storeMedia, type StoredMedia } from '../../storage/media.js'
import { MatrixError, notFound } from '../errors.js'
import { requireUser } from '../require-user.js'

/**
 * The content repository (client-server API "Content repository"), files in PostgreSQL
 * (storage/media.ts):
 * - `POST /_matrix/media/v3/upload` (`?filename=`; the body's bytes as they are, under their
 *   `Content-Type`) → `{content_uri: "mxc://<server_name>/<media_id>"}`; larger than
 *   `media.max_upload_bytes` (50 MiB by default): 413 `M_TOO_LARGE`.
 * - `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}[/{fileName}]` and
 *   `…/thumbnail/{serverName}/{mediaId}` (authenticated media, spec v1.11). A thumbnail is the
 *   image itself (PNG, JPEG, GIF, WebP, APNG, AVIF: the client scales it); other files have none
 *   (404). Files of other servers: 404 (no federation).
 * - `GET /_matrix/client/v1/media/config` (and `/_matrix/media/v3/config`): `m.upload.size`.
 * - The unauthenticated `/_matrix/media/v3/download|thumbnail` answer 404, as Synapse's frozen
 *   legacy media: no file is readable without an access token.
 *
 * Served files carry Synapse's protections: `Content-Disposition` `inline` only for types a
 * browser shows safely (images but SVG, audio, video, plain text), else `attachment`; a sandboxing
 * `Content-Security-Policy`; `X-Content-Type-Options: nosniff`.
 */

/** Types shown inline (Synapse's list): never HTML, SVG or anything that runs. */
const inlineTypes = new Set([
  'text/css', 'text/plain', 'text/csv', 'application/json', 'application/ld+json',
  'image/jpeg', 'image/gif', 'image/png', 'image/apng', 'image/webp', 'image/avif',
  'video/mp4', 'video/webm', 'video/ogg', 'video/quicktime',
  'audio/mp4', 'audio/webm', 'audio/aac', 'audio/mpeg', 'audio/ogg', 'audio/wave', 'audio/wav', 'audio/x-wav', 'audio/x-pn-wav', 'audio/flac', 'audio/x-flac',
])
/** Images a client can scale itself: their thumbnail is the file. */
const thumbnailTypes = new Set(['image/jpeg', 'image/gif', 'image/png', 'image/apng', 'image/webp', 'image/avif'])

const contentSecurityPolicy = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"

/** `type/subtype` without parameters, lowercased. */
function baseType(contentType: string): string {
  return contentType.split(';')[0]!.trim().toLowerCase()
}

/** `Content-Disposition` for `name` (RFC 6266, the name in UTF-8 per RFC 5987). */
function disposition(contentType: string, name: string | null): string {
  const kind = inlineTypes.has(baseType(contentType)) ? 'inline' : 'attachment'
  if (name === null || name === '') return kind
  return `${kind}; filename*=utf-8''${encodeURIComponent(name).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)}`
}

function send(reply: FastifyReply, media: StoredMedia, name: string | null): Buffer {
  void reply
    .header('content-type', media.contentType)
    .header('content-disposition', disposition(media.contentType, name))
    .header('content-security-policy', contentSecurityPolicy)
    .header('x-content-type-options', 'nosniff')
    .header('cross-origin-resource-policy', 'cross-origin')
    .header('cache-control', 'private, max-age=86400')
  return media.content
}

const segment = { type: 'string', minLength: 1, maxLength: 255 } as const
const mediaParams = { type: 'object', required: ['serverName', 'mediaId'], properties: { serverName: segment, mediaId: segment, fileName: segment } } as const

export const mediaRoutes: FastifyPluginAsync = async (app) => {
  const { db, config, clock } = app.myelin
  const maxBytes = config.media.max_upload_bytes
  // This plugin's routes take any body as bytes (a JSON file is a file like any other).
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: maxBytes }, (_request, body: Buffer, done) => done(null, body))

  for (const version of ['v3', 'r0']) {
    app.post<{ Querystring: { filename?: string } }>(
      `/_matrix/media/${version}/upload`,
      { bodyLimit: maxBytes, schema: { querystring: { type: 'object', properties: { filename: { type: 'string', maxLength: 255 } } } } },
      async (request) => {
        const { userId } = await requireUser(request)
        const content = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0)
        const header = request.headers['content-type']
        const contentType = typeof header === 'string' && header.trim() !== '' ? header.trim() : 'application/octet-stream'
        if (contentType.length > 255 || /[\r\n]/.test(contentType)) throw new MatrixError(400, 'M_INVALID_PARAM', 'Content-Type is not a media type')
        const filename = request.query.filename
        const mediaId = await storeMedia(db, { userId, contentType, ...(filename !== undefined && filename !== '' && { uploadName: filename }), content, now: clock() })
        return { content_uri: `mxc://${config.server_name}/${mediaId}` }
      },
    )
    app.get(`/_matrix/media/${version}/config`, { schema: {} }, async (request) => {
      await requireUser(request)
      return { 'm.upload.size': maxBytes }
    })
    for (const kind of ['download', 'thumbnail']) {
      app.get(`/_matrix/media/${version}/${kind}/*`, { schema: {} }, async () => {
        throw notFound('Not found: this server serves media through the authenticated endpoints (/_matrix/client/v1/media/…)')
      })
    }
  }

  app.get('/_matrix/client/v1/media/config', { schema: {} }, async (request) => {
    await requireUser(request)
    return { 'm.upload.size': maxBytes }
  })

  const lookUp = async (params: { serverName: string; mediaId: string }): Promise<StoredMedia> => {
    const media = params.serverName === config.server_name ? await readMedia(db, params.mediaId) : undefined
    if (media === undefined) throw notFound('Media not found')
    return media
  }
  for (const path of ['/_matrix/client/v1/media/download/:serverName/:mediaId', '/_matrix/client/v1/media/download/:serverName/:mediaId/:fileName']) {
    app.get<{ Params: { serverName: string; mediaId: string; fileName?: string } }>(path, { schema: { params: mediaParams } }, async (request, reply) => {
      await requireUser(request)
      const media = await lookUp(request.params)
      return send(reply, media, request.params.fileName ?? media.uploadName)
    })
  }
  app.get<{ Params: { serverName: string; mediaId: string }; Querystring: Record<string, string> }>(
    '/_matrix/client/v1/media/thumbnail/:serverName/:mediaId',
    {
      schema: {
        params: mediaParams,
        querystring: { type: 'object', properties: { width: { type: 'string', pattern: '^[0-9]{1,5}$' }, height: { type: 'string', pattern: '^[0-9]{1,5}$' }, method: { type: 'string', enum: ['crop', 'scale'] } } },
      },
    },
    async (request, reply) => {
      await requireUser(request)
      const media = await lookUp(request.params)
      if (!thumbnailTypes.has(baseType(media.contentType))) throw notFound('No thumbnail for this media')
      return send(reply, media, media.uploadName)
    },
  )
}
