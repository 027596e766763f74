import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import { createPendingMedia, fillPendingMedia, readMedia, readThumbnail, storeMedia, storeThumbnail, type StoredMedia } from '../../storage/media.js'
import { forbidden, limitExceeded, MatrixError, notFound } from '../errors.js'
import { requireUser } from '../require-user.js'
import { baseType, chooseThumbnailSize, servesItself, type ThumbnailMethod } from '../thumbnail-image.js'
import { createThumbnailer } from '../thumbnailer.js'

/**
 * The content repository (client-server API "Content repository"), files in PostgreSQL
 * (storage/media.ts):
 * - `POST /_matrix/media/v3/upload` (`?filename=`; the body's bytes as they are, under their
 *   `Content-Type`) → `{content_uri: "mxc://<server_name>/<media_id>"}`; larger than
 *   `media.max_upload_bytes` (50 MiB by default): 413 `M_TOO_LARGE`.
 * - `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}[/{fileName}]` and
 *   `…/thumbnail/{serverName}/{mediaId}?width=&height=[&method=crop|scale][&animated=]`
 *   (authenticated media, spec v1.11). Files of other servers: 404 (no federation).
 * - Thumbnails, as Synapse makes them: a request gets the nearest configured size at least as
 *   large (`media.thumbnail_sizes`, `chooseThumbnailSize`), made from PNG, JPEG and GIF images
 *   on first request in a worker thread (`thumbnailer.ts`) and kept (`media_thumbnails`) for
 *   every api worker. The image itself is its thumbnail when it is already that small, animated
 *   (a GIF asked for `animated=true`), of a type not decoded here (WebP, APNG, AVIF), corrupt,
 *   or declaring more than `media.max_image_pixels`; other files have none (404).
 * - Asynchronous uploads (spec v1.7): `POST /_matrix/media/v1/create` answers a `content_uri`
 *   (and `unused_expires_at`, 24 h later) that `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`
 *   fills, by its creator only (403), once (409 `M_CANNOT_OVERWRITE_MEDIA`); at most 5 unused per
 *   user (429). A download of one not uploaded yet waits up to `timeout_ms` (default 20 s, at
 *   most 2 min), then answers 504 `M_NOT_YET_UPLOADED`.
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
/** Images that have a thumbnail (made here, or the image itself). */
const thumbnailTypes = new Set(['image/jpeg', 'image/gif', 'image/png', 'image/apng', 'image/webp', 'image/avif'])

const contentSecurityPolicy = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"

/** `Content-Disposition` for `name` (RFC 6266, the name in UTF-8 per RFC 5987). */
function disposition(contentType: string, name: string | null): string {
  const kind = inlineTypes.has(baseType(contentType)) ? 'inline' : 'attachment'
  if (name === null || name === '') return kind
  return `${kind}; filename*=utf-8''${encodeURIComponent(name).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)}`
}

type Uploaded = Extract<StoredMedia, { pending: false }>

/** How long a created media ID stays usable unused (Synapse's default). */
const unusedExpiryMs = 24 * 60 * 60 * 1000
/** Unused created media IDs a user may hold at once (Synapse's default). */
const maxPendingUploads = 5
/** A download of a pending upload waits this long unless `timeout_ms` says otherwise, and at most `maxWaitMs`. */
const defaultWaitMs = 20_000
const maxWaitMs = 120_000
const pollMs = 100

function send(reply: FastifyReply, media: { contentType: string; content: Buffer }, name: string | null): Buffer {
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
  const { db, config, clock, log } = app.myelin
  const thumbnailer = createThumbnailer({ maxPixels: config.media.max_image_pixels, log, ...(app.myelin.metrics !== undefined && { registry: app.myelin.metrics }) })
  app.addHook('onClose', () => thumbnailer.close())
  const maxBytes = config.media.max_upload_bytes
  // This plugin's routes take any body as bytes (a JSON file is a file like any other).
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: maxBytes }, (_request, body: Buffer, done) => done(null, body))

  /** The upload's type from its `Content-Type` (application/octet-stream when absent). */
  const typeOf = (header: unknown): string => {
    const contentType = typeof header === 'string' && header.trim() !== '' ? header.trim() : 'application/octet-stream'
    if (contentType.length > 255 || /[\r\n]/.test(contentType)) throw new MatrixError(400, 'M_INVALID_PARAM', 'Content-Type is not a media type')
    return contentType
  }
  const filenameQuery = { querystring: { type: 'object', properties: { filename: { type: 'string', maxLength: 255 } } } } as const
  /** The request's bytes (none: an empty file). */
  const bodyBytes = (body: unknown): Buffer => (Buffer.isBuffer(body) ? body : Buffer.alloc(0))
  const uploadConfig = async (request: FastifyRequest) => {
    await requireUser(request)
    return { 'm.upload.size': maxBytes }
  }

  app.post('/_matrix/media/v1/create', { schema: {} }, async (request) => {
    const { userId } = await requireUser(request)
    const now = clock()
    const mediaId = await createPendingMedia(db, { userId, now, expiresTs: now + unusedExpiryMs, maxPending: maxPendingUploads })
    if (mediaId === undefined) throw limitExceeded(60_000)
    return { content_uri: `mxc://${config.server_name}/${mediaId}`, unused_expires_at: now + unusedExpiryMs }
  })

  for (const version of ['v3', 'r0']) {
    app.put<{ Params: { serverName: string; mediaId: string }; Querystring: { filename?: string } }>(
      `/_matrix/media/${version}/upload/:serverName/:mediaId`,
      { bodyLimit: maxBytes, schema: { params: mediaParams, ...filenameQuery } },
      async (request) => {
        const { userId } = await requireUser(request)
        const { serverName, mediaId } = request.params
        if (serverName !== config.server_name) throw notFound('Media not found')
        const filename = request.query.filename
        const outcome = await fillPendingMedia(db, {
          mediaId,
          userId,
          contentType: typeOf(request.headers['content-type']),
          ...(filename !== undefined && filename !== '' && { uploadName: filename }),
          content: bodyBytes(request.body),
          now: clock(),
        })
        if (outcome === 'not-found') throw notFound('Media not found, or its time to be uploaded ran out')
        if (outcome === 'forbidden') throw forbidden('This media ID was created by another user')
        if (outcome === 'exists') throw new MatrixError(409, 'M_CANNOT_OVERWRITE_MEDIA', 'Media already uploaded')
        return {}
      },
    )
    app.post<{ Querystring: { filename?: string } }>(
      `/_matrix/media/${version}/upload`,
      { bodyLimit: maxBytes, schema: filenameQuery },
      async (request) => {
        const { userId } = await requireUser(request)
        const content = bodyBytes(request.body)
        const contentType = typeOf(request.headers['content-type'])
        const filename = request.query.filename
        const mediaId = await storeMedia(db, { userId, contentType, ...(filename !== undefined && filename !== '' && { uploadName: filename }), content, now: clock() })
        return { content_uri: `mxc://${config.server_name}/${mediaId}` }
      },
    )
    app.get(`/_matrix/media/${version}/config`, { schema: {} }, uploadConfig)
    for (const kind of ['download', 'thumbnail']) {
      app.get(`/_matrix/media/${version}/${kind}/*`, { schema: {} }, async () => {
        throw notFound('Not found: this server serves media through the authenticated endpoints (/_matrix/client/v1/media/…)')
      })
    }
  }

  app.get('/_matrix/client/v1/media/config', { schema: {} }, uploadConfig)

  /** The file, waiting up to `timeout_ms` for one created and not uploaded yet. */
  const lookUp = async (params: { serverName: string; mediaId: string }, query: { timeout_ms?: string }): Promise<Uploaded> => {
    if (params.serverName !== config.server_name) throw notFound('Media not found')
    const deadline = clock() + Math.min(query.timeout_ms === undefined ? defaultWaitMs : Number(query.timeout_ms), maxWaitMs)
    for (;;) {
      const media = await readMedia(db, params.mediaId, clock())
      if (media === undefined) throw notFound('Media not found')
      if (!media.pending) return media
      if (clock() >= deadline) throw new MatrixError(504, 'M_NOT_YET_UPLOADED', 'The media has not been uploaded yet')
      await new Promise((resolve) => setTimeout(resolve, Math.max(1, Math.min(pollMs, deadline - clock()))))
    }
  }
  const timeoutParam = { type: 'string', pattern: '^[0-9]{1,9}$' } as const
  for (const path of ['/_matrix/client/v1/media/download/:serverName/:mediaId', '/_matrix/client/v1/media/download/:serverName/:mediaId/:fileName']) {
    app.get<{ Params: { serverName: string; mediaId: string; fileName?: string }; Querystring: { timeout_ms?: string } }>(
      path,
      { schema: { params: mediaParams, querystring: { type: 'object', properties: { timeout_ms: timeoutParam } } } },
      async (request, reply) => {
        await requireUser(request)
        const media = await lookUp(request.params, request.query)
        return send(reply, media, request.params.fileName ?? media.uploadName)
      },
    )
  }
  const dimension = { type: 'string', pattern: '^[0-9]{1,5}$' } as const
  app.get<{ Params: { serverName: string; mediaId: string }; Querystring: { width: string; height: string; method?: ThumbnailMethod; animated?: 'true' | 'false'; timeout_ms?: string } }>(
    '/_matrix/client/v1/media/thumbnail/:serverName/:mediaId',
    {
      schema: {
        params: mediaParams,
        querystring: {
          type: 'object',
          required: ['width', 'height'],
          properties: { width: dimension, height: dimension, method: { type: 'string', enum: ['crop', 'scale'] }, animated: { type: 'string', enum: ['true', 'false'] }, timeout_ms: timeoutParam },
        },
      },
    },
    async (request, reply) => {
      await requireUser(request)
      const { mediaId } = request.params
      const { width, height, method = 'scale' } = request.query
      const animated = request.query.animated === 'true'
      const size = chooseThumbnailSize(config.media.thumbnail_sizes, { width: Number(width), height: Number(height), method })
      const kept = () => (size === undefined || request.params.serverName !== config.server_name ? undefined : readThumbnail(db, mediaId, size))
      // Most requests are for a thumbnail made already: the file itself is not read.
      let thumbnail = animated ? undefined : await kept()
      if (thumbnail?.kind === 'image') return send(reply, thumbnail, null)
      const media = await lookUp(request.params, request.query)
      if (!thumbnailTypes.has(baseType(media.contentType))) throw notFound('No thumbnail for this media')
      if (size === undefined || servesItself(media.contentType, animated) !== undefined) return send(reply, media, media.uploadName)
      // An image that is not an animated GIF has one thumbnail per size, animated or not.
      if (animated) thumbnail = await kept()
      if (thumbnail === undefined) {
        try {
          const made = await thumbnailer.render(`${mediaId}/${size.width}x${size.height}/${size.method}`, media, size)
          thumbnail = made.kind === 'image' ? { kind: 'image', contentType: made.contentType, content: made.content } : { kind: 'original' }
          await storeThumbnail(db, mediaId, size, thumbnail, clock())
        } catch (err) {
          // A failed render (thread crash, time-out) is not kept: the next request tries again.
          request.log.warn({ err, mediaId, size }, 'thumbnail render failed; serving the file')
          thumbnail = { kind: 'original' }
        }
      }
      return thumbnail.kind === 'image' ? send(reply, thumbnail, null) : send(reply, media, media.uploadName)
    },
  )
}
