import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { StorageError, type ErrorCode } from '../storage/errors.js'

/**
 * Matrix errors: every failed request answers `{errcode, error, ...extra}` with the right HTTP
 * status. Client mistakes are 4xx, never 500; a 500 carries no detail (the log has it).
 * The errcodes and statuses the API answers are listed in api/README.md.
 */

/**
 * An error answered to the client as it is. Throw it from any handler or hook.
 *
 * @example
 * throw new MatrixError(403, 'M_FORBIDDEN', 'You cannot read this room')
 * throw new MatrixError(429, 'M_LIMIT_EXCEEDED', 'Too many attempts', { retry_after_ms: 2000 })
 */
export class MatrixError extends Error {
  override readonly name = 'MatrixError'
  constructor(
    readonly status: number,
    readonly errcode: string,
    message: string,
    readonly extra: Readonly<Record<string, unknown>> = {},
  ) {
    super(message)
  }

  /** The response body. */
  body(): Record<string, unknown> {
    return { errcode: this.errcode, error: this.message, ...this.extra }
  }
}

/** 403 `M_FORBIDDEN`. */
export function forbidden(message: string): MatrixError {
  return new MatrixError(403, 'M_FORBIDDEN', message)
}

/** 404 `M_NOT_FOUND`. */
export function notFound(message: string): MatrixError {
  return new MatrixError(404, 'M_NOT_FOUND', message)
}

/** 400 `M_INVALID_PARAM`. */
export function invalidParam(message: string): MatrixError {
  return new MatrixError(400, 'M_INVALID_PARAM', message)
}

/** 429 `M_LIMIT_EXCEEDED` with `retry_after_ms`. */
export function limitExceeded(retryAfterMs: number): MatrixError {
  return new MatrixError(429, 'M_LIMIT_EXCEEDED', 'Too many requests', { retry_after_ms: Math.max(1, Math.ceil(retryAfterMs)) })
}

/** How long a client should wait before retrying after a 503. */
export const unavailableRetryAfterMs = 1000

/**
 * The Matrix answer for each StorageError code. A new code does not compile until it is mapped
 * here. Unavailability and ownership races are 503 with `retry_after_ms`: retrying helps.
 */
export const storageErrorStatus = {
  ES_INVALID_TOKEN: { status: 400, errcode: 'M_INVALID_PARAM' },
  ES_INVALID_PARAM: { status: 400, errcode: 'M_INVALID_PARAM' },
  ES_EVENT_NOT_FOUND: { status: 404, errcode: 'M_NOT_FOUND' },
  ES_ROOM_NOT_FOUND: { status: 404, errcode: 'M_NOT_FOUND' },
  ES_FORBIDDEN: { status: 403, errcode: 'M_FORBIDDEN' },
  ES_EVENT_TOO_LARGE: { status: 413, errcode: 'M_TOO_LARGE' },
  ES_BAD_EVENT: { status: 400, errcode: 'M_BAD_JSON' },
  ES_INVALID_SIGNATURE: { status: 400, errcode: 'M_INVALID_SIGNATURE' },
  ES_NOT_OWNER: { status: 503, errcode: 'M_UNKNOWN' },
  ES_FENCED: { status: 503, errcode: 'M_UNKNOWN' },
  ES_UNAVAILABLE: { status: 503, errcode: 'M_UNKNOWN' },
  ES_SCHEMA_BEHIND: { status: 500, errcode: 'M_UNKNOWN' },
  ES_SCHEMA_AHEAD: { status: 500, errcode: 'M_UNKNOWN' },
  ES_CONFIG_INVALID: { status: 500, errcode: 'M_UNKNOWN' },
} as const satisfies Record<ErrorCode, { status: number; errcode: string }>

/** Node socket errors and SQLSTATEs that mean "the database is unreachable or overloaded". */
const unavailableCodes = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH', '57P01', '57P02', '57P03', '53300', '40001', '40P01'])
const unavailableMessages = [/timeout exceeded when trying to connect/i, /Connection terminated/i, /Client has encountered a connection error/i]

/** What to answer for a thrown error, and how loudly to log it. */
export interface MatrixResponse {
  readonly status: number
  readonly body: Record<string, unknown>
  /** 5xx: `error` (with the error); 4xx: `info`; retryable unavailability: `warn`. */
  readonly level: 'error' | 'warn' | 'info'
}

function answer(status: number, errcode: string, error: string, extra: Record<string, unknown> = {}): MatrixResponse {
  const level = status >= 500 ? (status === 503 ? 'warn' : 'error') : 'info'
  return { status, body: { errcode, error, ...extra }, level }
}

/**
 * Maps any thrown value to the Matrix answer. `bodyWasEmpty` tells a missing body (M_NOT_JSON)
 * from one that failed the route's schema (M_BAD_JSON).
 *
 * @example
 * toMatrixResponse(new StorageError('ES_FORBIDDEN', 'not a member'), false) // { status: 403, body: { errcode: 'M_FORBIDDEN', … } }
 */
export function toMatrixResponse(err: unknown, bodyWasEmpty: boolean): MatrixResponse {
  if (err instanceof MatrixError) return { status: err.status, body: err.body(), level: err.status >= 500 ? 'error' : 'info' }
  if (err instanceof StorageError) {
    const mapped = storageErrorStatus[err.code]
    if (mapped.status === 503) return answer(503, mapped.errcode, 'Temporarily unavailable, try again', { retry_after_ms: unavailableRetryAfterMs })
    if (mapped.status >= 500) return answer(mapped.status, mapped.errcode, 'Internal server error')
    return answer(mapped.status, mapped.errcode, err.message)
  }
  const e = (typeof err === 'object' && err !== null ? err : {}) as Partial<FastifyError> & { validationContext?: string }
  if (e.validation) {
    if (e.validationContext === 'body') {
      if (bodyWasEmpty) return answer(400, 'M_NOT_JSON', 'Content not JSON')
      return answer(400, 'M_BAD_JSON', e.message ?? 'invalid body')
    }
    return answer(400, 'M_INVALID_PARAM', e.message ?? 'invalid parameter')
  }
  switch (e.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return answer(413, 'M_TOO_LARGE', 'Request body too large')
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return answer(400, 'M_NOT_JSON', 'Content not JSON')
  }
  if (typeof e.code === 'string') {
    if (unavailableCodes.has(e.code)) return answer(503, 'M_UNKNOWN', 'Temporarily unavailable, try again', { retry_after_ms: unavailableRetryAfterMs })
    // SQLSTATE 22xxx (data exception: a NUL byte, an out-of-range number) and 54xxx (a value too
    // large to index) come from what the client sent; the routes' schemas try to stop them first.
    if (/^22[0-9A-Z]{3}$/.test(e.code)) return answer(400, 'M_INVALID_PARAM', 'A value in the request cannot be stored')
    if (/^54[0-9A-Z]{3}$/.test(e.code)) return answer(413, 'M_TOO_LARGE', 'A value in the request is too large')
  }
  if (typeof e.message === 'string' && unavailableMessages.some((re) => re.test(e.message ?? ''))) {
    return answer(503, 'M_UNKNOWN', 'Temporarily unavailable, try again', { retry_after_ms: unavailableRetryAfterMs })
  }
  if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
    return answer(e.statusCode, 'M_UNKNOWN', e.message ?? 'Bad request')
  }
  return answer(500, 'M_UNKNOWN', 'Internal server error')
}

/** Sends the Matrix answer for `err` and logs it (never the request URL or headers). */
export function replyWithError(err: unknown, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  const response = toMatrixResponse(err, request.body === undefined)
  if (response.level === 'info') request.log.info({ status: response.status, errcode: response.body.errcode }, 'request refused')
  else request.log[response.level]({ err, status: response.status }, 'request failed')
  return reply.code(response.status).send(response.body)
}

/**
 * Installs the error handler, the 404/405 `M_UNRECOGNIZED` handler and the registry of route
 * paths that tells them apart. MUST run before any route is added, so every route is known.
 */
export function installErrorHandling(app: FastifyInstance): void {
  const known: { methods: Set<string>; pattern: RegExp }[] = []
  app.addHook('onRoute', (route) => {
    const methods = new Set((Array.isArray(route.method) ? route.method : [route.method]).map(String))
    // The catch-all CORS preflight route (OPTIONS *) matches every path; it says nothing.
    if (methods.size === 1 && methods.has('OPTIONS')) return
    known.push({ methods, pattern: routePattern(route.url ?? route.path) })
  })
  app.setErrorHandler((err, request, reply) => replyWithError(err, request, reply))
  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?', 1)[0] ?? ''
    const sameMethod = known.some((r) => r.methods.has(request.method) && r.pattern.test(path))
    const otherMethod = !sameMethod && known.some((r) => r.pattern.test(path))
    const status = otherMethod ? 405 : 404
    return reply.code(status).send({ errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' })
  })
}

/** A regexp matching the concrete paths of a fastify route URL (`:param` = one segment, `*` = rest). */
export function routePattern(url: string): RegExp {
  const body = url
    .replace(/\/$/, '')
    .split('/')
    .map((segment) => {
      if (segment === '*') return '.*'
      if (segment.startsWith(':')) return '[^/]+'
      return segment.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
    })
    .join('/')
  return new RegExp(`^${body}/?$`)
}
