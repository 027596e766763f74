import type { FastifyInstance } from 'fastify'

/**
 * One log line per request (`request completed`, at info; 5xx at warn), with the route pattern,
 * status and duration. The URL is logged with `access_token` values replaced, and headers are
 * never logged, so tokens cannot reach the log. Errors are logged by the error handler.
 */

/**
 * The URL with every `access_token` query value replaced by `[redacted]`.
 *
 * @example
 * redactUrl('/_matrix/client/v3/sync?access_token=syt_x&since=s1') // '/_matrix/client/v3/sync?access_token=[redacted]&since=s1'
 */
export function redactUrl(url: string): string {
  const query = url.indexOf('?')
  if (query === -1) return url
  return url.slice(0, query) + url.slice(query).replace(/([?&;](?:access_token|access%5Ftoken)=)[^&;#]*/gi, '$1[redacted]')
}

/** Adds the per-request log line. */
export function installRequestLogging(app: FastifyInstance): void {
  app.addHook('onResponse', async (request, reply) => {
    const fields = {
      method: request.method,
      url: redactUrl(request.url),
      route: request.routeOptions.url ?? null,
      status: reply.statusCode,
      ms: Math.round(reply.elapsedTime * 10) / 10,
    }
    if (reply.statusCode >= 500) request.log.warn(fields, 'request completed')
    else request.log.info(fields, 'request completed')
  })
}
