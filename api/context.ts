import type { Kysely } from 'kysely'
import type { Registry } from 'prom-client'
import type { MyelinConfig } from '../storage/config.js'
import type { Requester } from '../storage/accounts.js'
import type { Logger } from '../storage/logger.js'
import type { Database } from '../storage/schema.js'
import type { Authenticator } from './authenticator.js'
import type { PresenceService } from './presence-service.js'
import type { MessageLimiter } from './message-limiter.js'
import type { RateLimiter } from './rate-limiter.js'

/**
 * What an api process gives its fastify app (the composition root builds it; tests build the
 * same). The app owns none of it: closing the app does not close the database.
 */
export interface ApiContext {
  readonly config: MyelinConfig
  readonly db: Kysely<Database>
  readonly log: Logger
  /** When given, the app registers `myelin_http_request_duration_seconds` in it. */
  readonly metrics?: Registry
}

/**
 * The context plus the app's own per-process services, available to every route plugin as
 * `fastify.myelin` (or `request.server.myelin`).
 */
export interface ApiRuntime extends ApiContext {
  readonly auth: Authenticator
  /** Milliseconds since the epoch; tests may fake it. */
  readonly clock: () => number
  /** Failed password attempts per user ID (login and user-interactive auth). */
  readonly failedLogins: RateLimiter
  /** The message rate limit (`rc_message`) of client sends. */
  readonly messages: MessageLimiter
  readonly presence: PresenceService
}

declare module 'fastify' {
  interface FastifyInstance {
    myelin: ApiRuntime
  }
  interface FastifyRequest {
    /** Set by `requireUser` once the request's token has been checked. */
    myelinRequester: Requester | null
  }
}
