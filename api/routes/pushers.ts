import type { FastifyPluginAsync } from 'fastify'
import { notificationsPage } from '../../storage/notifications.js'
import { deletePusher, pushersOf, setPusher } from '../../storage/pushers.js'
import { RoomStreamToken } from '../../storage/streams/room-stream-token.js'
import { clientRoute } from '../client-route.js'
import { invalidParam, MatrixError } from '../errors.js'
import { requireUser } from '../require-user.js'

/**
 * `GET /pushers` and `POST /pushers/set` (client-server API "Push notifications"). A pusher
 * belongs to the access token that set it (deleted at its logout). Only `http` pushers are
 * taken, with a `data.url` of `http(s)://…/_matrix/push/v1/notify` (Synapse asks the same path);
 * `kind: null` deletes the pusher. The push sender (api/push-sender.ts) delivers.
 *
 * `GET /notifications` (`from`, `limit` (default 20, at most 100), `only=highlight`): the events
 * that notified the user, newest first (storage/notifications.ts).
 */

interface SetBody {
  kind: string | null
  app_id: string
  pushkey: string
  app_display_name?: string
  device_display_name?: string
  profile_tag?: string
  lang?: string
  data?: Record<string, unknown>
  append?: boolean
}

const text = (maxLength: number) => ({ type: 'string', maxLength }) as const

const setSchema = {
  type: 'object',
  required: ['kind', 'app_id', 'pushkey'],
  properties: {
    kind: { type: ['string', 'null'], maxLength: 32 },
    // Spec: app_id at most 64 characters, pushkey at most 512 bytes.
    app_id: { type: 'string', minLength: 1, maxLength: 64 },
    pushkey: { type: 'string', minLength: 1, maxLength: 512 },
    app_display_name: text(255),
    device_display_name: text(255),
    profile_tag: text(255),
    lang: text(64),
    data: { type: 'object', properties: { url: text(2048), format: text(64) } },
    append: { type: 'boolean' },
  },
} as const

export const pusherRoutes: FastifyPluginAsync = async (app) => {
  const { db } = app.myelin

  clientRoute(app, {
    method: 'GET',
    path: '/pushers',
    schema: {},
    handler: async (request) => {
      const { userId } = await requireUser(request)
      return { pushers: await pushersOf(db, userId) }
    },
  })

  clientRoute<{ Body: SetBody }>(app, {
    method: 'POST',
    path: '/pushers/set',
    schema: { body: setSchema },
    handler: async (request) => {
      const requester = await requireUser(request)
      const body = request.body
      if (Buffer.byteLength(body.pushkey, 'utf8') > 512) throw invalidParam('pushkey is longer than 512 bytes')
      if (body.kind === null) {
        await deletePusher(db, requester.userId, body.app_id, body.pushkey)
        return {}
      }
      const missing = (['app_display_name', 'device_display_name', 'lang', 'data'] as const).filter((field) => body[field] === undefined)
      if (missing.length > 0) throw new MatrixError(400, 'M_MISSING_PARAM', `Missing parameters: ${missing.join(', ')}`)
      if (body.kind !== 'http') throw invalidParam(`Unsupported pusher kind ${JSON.stringify(body.kind)}: only http pushers are supported`)
      checkGatewayUrl(body.data!['url'])
      await setPusher(db, {
        userId: requester.userId,
        tokenId: requester.tokenId,
        append: body.append ?? false,
        now: app.myelin.clock(),
        pusher: {
          kind: body.kind,
          app_id: body.app_id,
          pushkey: body.pushkey,
          app_display_name: body.app_display_name!,
          device_display_name: body.device_display_name!,
          ...(body.profile_tag !== undefined && { profile_tag: body.profile_tag }),
          lang: body.lang!,
          data: body.data!,
        },
      })
      return {}
    },
  })
}

export const notificationRoutes: FastifyPluginAsync = async (app) => {
  const { db } = app.myelin

  clientRoute<{ Querystring: { from?: string; limit?: string; only?: string } }>(app, {
    method: 'GET',
    path: '/notifications',
    schema: {
      querystring: {
        type: 'object',
        properties: { from: { type: 'string', pattern: '^[0-9]{1,18}$' }, limit: { type: 'string', pattern: '^[1-9][0-9]{0,5}$' }, only: { type: 'string', maxLength: 64 } },
      },
    },
    handler: async (request) => {
      const { userId } = await requireUser(request)
      const q = request.query
      return notificationsPage(db, {
        userId,
        ...(q.from !== undefined && { before: BigInt(q.from) }),
        // Spec: the server's default; at most 100 per page.
        limit: Math.min(q.limit === undefined ? 20 : Number(q.limit), 100),
        highlightOnly: q.only === 'highlight',
        // Every committed event: a notification list needs no position shared with /sync.
        upTo: RoomStreamToken.live(BigInt(Number.MAX_SAFE_INTEGER)),
        now: app.myelin.clock(),
      })
    },
  })
}

/** An http pusher's `data.url`: an absolute http(s) URL whose path is the push gateway API's. */
function checkGatewayUrl(url: unknown): void {
  if (typeof url !== 'string') throw new MatrixError(400, 'M_MISSING_PARAM', "Missing parameters: data.url (an http pusher's gateway)")
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    throw invalidParam('data.url is not a URL')
  }
  if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') throw invalidParam('data.url must be an http or https URL')
  if (parsed.pathname !== '/_matrix/push/v1/notify') throw invalidParam("data.url must have the path '/_matrix/push/v1/notify'")
}
