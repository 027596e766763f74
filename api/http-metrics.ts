import type { FastifyInstance } from 'fastify'
import { Histogram, type Registry } from 'prom-client'

/** Buckets (seconds) of client request latency histograms: fast API calls up to minute-long long-polls. */
export const httpLatencyBuckets: readonly number[] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]

/** Name of the per-route latency histogram. */
export const httpDurationMetric = 'myelin_http_request_duration_seconds'

/**
 * Records every request's duration in `myelin_http_request_duration_seconds{method,route,status}`.
 * `route` is the route pattern (bounded cardinality); requests that matched no route share
 * `unmatched`. Re-uses the histogram if the registry already has it (several apps, one registry).
 *
 * @example
 * const registry = new Registry()
 * installHttpMetrics(app, registry)
 */
export function installHttpMetrics(app: FastifyInstance, registry: Registry): void {
  const existing = registry.getSingleMetric(httpDurationMetric)
  const histogram =
    (existing as Histogram<'method' | 'route' | 'status'> | undefined) ??
    new Histogram({
      name: httpDurationMetric,
      help: 'Client API request duration by method, route pattern and status',
      labelNames: ['method', 'route', 'status'] as const,
      buckets: [...httpLatencyBuckets],
      registers: [registry],
    })
  app.addHook('onResponse', async (request, reply) => {
    const route = request.is404 ? 'unmatched' : (request.routeOptions.url ?? 'unmatched')
    histogram.observe({ method: request.method, route, status: String(reply.statusCode) }, reply.elapsedTime / 1000)
  })
}
