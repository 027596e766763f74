import Fastify, { LogController, type FastifyInstance, type FastifyPluginAsync } from 'fastify'
import type { Logger } from '../storage/logger.js'
import { createAuthenticator } from './authenticator.js'
import type { ApiContext, ApiRuntime } from './context.js'
import { corsHeaders, installCors } from './cors.js'
import { installErrorHandling, MatrixError, replyWithError } from './errors.js'
import { installHttpMetrics } from './http-metrics.js'
import { installJsonBodyParser } from './json-body.js'
import { createPresenceService } from './presence-service.js'
import { createMessageLimiter } from './message-limiter.js'
import { createRateLimiter } from './rate-limiter.js'
import { installRequestLogging } from './request-logging.js'
import { accountDataRoutes } from './routes/account-data.js'
import { roomEphemeralRoutes } from './routes/room-ephemeral.js'
import { toDeviceRoutes } from './routes/to-device.js'
import { userDirectoryRoutes } from './routes/user-directory.js'
import { accountRoutes } from './routes/account.js'
import { adminRegisterRoutes } from './routes/admin-register.js'
import { deviceRoutes } from './routes/devices.js'
import { filterRoutes } from './routes/filters.js'
import { loginRoutes } from './routes/login.js'
import { keyBackupRoutes } from './routes/key-backup.js'
import { keyRoutes } from './routes/keys.js'
import { presenceRoutes } from './routes/presence.js'
import { mediaRoutes } from './routes/media.js'
import { notificationRoutes, pusherRoutes } from './routes/pushers.js'
import { spaceRoutes } from './routes/spaces.js'
import { profileRoutes } from './routes/profile.js'
import { pushRuleRoutes } from './routes/push-rules.js'
import { registerRoutes } from './routes/register.js'
import { serverInfoRoutes } from './routes/server-info.js'

export type { ApiContext, ApiRuntime } from './context.js'

/** Largest request body (1 MiB; events themselves are limited to 64 KiB by the persister). */
export const defaultBodyLimitBytes = 1024 * 1024

export interface BuildAppOptions {
  /** Largest request body in bytes (default 1 MiB); larger ones are 413 `M_TOO_LARGE`. */
  readonly bodyLimit?: number
  /** Logger for requests (default `ctx.log.child({ component: 'http' })`). */
  readonly logger?: Logger
  /**
   * More routes (rooms, sync, …), registered after the built-in ones as encapsulated plugins.
   * They inherit the error handling, CORS, logging and metrics, and reach the context as
   * `fastify.myelin`; authenticate with `requireUser(request)`, register paths under both
   * versions with `clientRoute`.
   */
  readonly plugins?: readonly FastifyPluginAsync[]
  /** Lifetime of cached access-token lookups (default 30 000 ms; see api/authenticator.ts). */
  readonly tokenCacheTtlMs?: number
  /** Failed password attempts allowed per user ID: burst, then `perSecond` (default 5, 0.1/s). */
  readonly failedLoginLimit?: { readonly burst: number; readonly perSecond: number }
  /** Milliseconds since the epoch (default `Date.now`). */
  readonly clock?: () => number
}

/**
 * Builds the Matrix client-server API app of one api process, without listening (tests use
 * `app.inject`; `main` calls `app.listen`). The app does not own `ctx`: closing it leaves the
 * database open.
 *
 * Every response to a failed request is a Matrix error (api/errors.ts); unknown paths are 404
 * `M_UNRECOGNIZED`, known paths with the wrong method 405 `M_UNRECOGNIZED`; bodies are JSON
 * whatever their Content-Type; query strings are not type-coerced (declare query parameters as
 * strings and parse them); paths ignore a trailing slash.
 *
 * @example
 * const app = await buildApp({ config, db, log, metrics: registry }, { plugins: [roomRoutes, syncRoutes] })
 * await app.listen({ port: 8008, host: '127.0.0.1' })
 */
export async function buildApp(ctx: ApiContext, options: BuildAppOptions = {}): Promise<FastifyInstance> {
  const clock = options.clock ?? Date.now
  const app = Fastify({
    loggerInstance: options.logger ?? ctx.log.child({ component: 'http' }),
    // One line per request comes from request-logging.ts (with the URL redacted) instead.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: options.bodyLimit ?? defaultBodyLimitBytes,
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: 2048 },
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: true, allErrors: false } },
    frameworkErrors: (err, request, reply) => {
      const malformed = new MatrixError(400, 'M_UNRECOGNIZED', err.code === 'FST_ERR_BAD_URL' ? 'Malformed URL' : 'Unrecognized request')
      replyWithError(malformed, request, reply.headers(corsHeaders))
    },
  }) as unknown as FastifyInstance

  const runtime: ApiRuntime = {
    ...ctx,
    auth: createAuthenticator({
      db: ctx.db,
      clock,
      ...(options.tokenCacheTtlMs !== undefined && { ttlMs: options.tokenCacheTtlMs }),
      onPollError: (err) => ctx.log.warn({ err }, 'token revocation poll failed; cached tokens still expire'),
    }),
    clock,
    failedLogins: createRateLimiter({ ...(options.failedLoginLimit ?? { burst: 5, perSecond: 0.1 }), clock }),
    messages: createMessageLimiter({ db: ctx.db, limit: ctx.config.rc_message, clock, ...(ctx.metrics !== undefined && { registry: ctx.metrics }) }),
    presence: createPresenceService({ db: ctx.db, log: ctx.log, clock, enabled: ctx.config.presence.enabled }),
  }
  app.decorate('myelin', runtime)
  app.decorateRequest('myelinRequester', null)

  installErrorHandling(app)
  installJsonBodyParser(app)
  installCors(app)
  installRequestLogging(app)
  if (ctx.metrics) installHttpMetrics(app, ctx.metrics)

  const builtIn = [
    serverInfoRoutes,
    registerRoutes,
    adminRegisterRoutes,
    loginRoutes,
    accountRoutes,
    deviceRoutes,
    profileRoutes,
    presenceRoutes,
    filterRoutes,
    accountDataRoutes,
    roomEphemeralRoutes,
    userDirectoryRoutes,
    toDeviceRoutes,
    keyRoutes,
    keyBackupRoutes,
    pushRuleRoutes,
    pusherRoutes,
    notificationRoutes,
    spaceRoutes,
    mediaRoutes,
  ]
  for (const plugin of [...builtIn, ...(options.plugins ?? [])]) await app.register(plugin)
  return app
}
