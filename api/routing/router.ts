import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Readable } from 'node:stream'
import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import { Pool } from 'undici'
import type { ShardMap } from '../../persisters/shard-map.js'
import type { Logger } from '../../storage/logger.js'
import { httpLatencyBuckets } from '../http-metrics.js'
import { classifyRequest } from './path-table.js'
import { createUpstreamSet, type RouterUpstreams, type Upstream, type UpstreamSet } from './upstream-set.js'
import { userKeyFromRequest } from './user-key.js'

export { upstreamsFromProcesses, type RouterUpstreams, type Upstream } from './upstream-set.js'

export interface RouterOptions {
  readonly upstreams: RouterUpstreams
  /** The deployment's shard map (`stream_writers.events`, `shard_strategy`, `room_pins`). */
  readonly shardMap: ShardMap
  readonly log: Logger
  /**
   * Request bodies up to this many bytes (by `Content-Length`) are buffered so that a failed
   * attempt can be repeated on another upstream; larger or chunked bodies stream through once.
   * Default 1 MiB (Matrix events are at most 64 KiB).
   */
  readonly maxReplayBodyBytes?: number
  /** How long an upstream that refused a connection is tried last. Default 1,000 ms. */
  readonly downMs?: number
  /** `retry_after_ms` in the 502/503 answers. Default 1,000 ms. */
  readonly retryAfterMs?: number
  /** How long an idle keep-alive connection to an upstream stays open. Default 30,000 ms. */
  readonly keepAliveTimeoutMs?: number
  /** Wall clock for down marks; tests pass a fake. Default `Date.now`. */
  readonly clock?: () => number
  /**
   * Where the router's metrics go: `myelin_router_request_duration_seconds{route,status}`,
   * `myelin_router_requests_in_flight`, `myelin_router_upstream_failures_total{upstream,delivered}`.
   */
  readonly registry?: Registry
}

export interface Router {
  /** Starts serving; resolves with the bound address (port 0 picks a free port). */
  listen(port: number, host?: string): Promise<{ host: string; port: number }>
  /**
   * Replaces the upstream set, e.g. after the supervisor restarted a child on a new port.
   * Requests in flight finish on the upstreams they started on; pools of upstreams that left the
   * set close once idle.
   */
  setUpstreams(upstreams: RouterUpstreams): void
  /** The upstreams in use. */
  upstreams(): RouterUpstreams
  /**
   * Stops accepting connections, lets requests in flight finish for up to `graceMs` (default
   * 5,000; long-polling syncs would otherwise hold the shutdown), then closes every connection.
   */
  close(graceMs?: number): Promise<void>
}

/** Paths the router forwards; anything else is a worker's internal endpoint (or nothing). */
const publicPrefixes = ['/_matrix/', '/_synapse/', '/.well-known/matrix/']

/** Methods whose repetition has no further effect (RFC 9110); Matrix sends are PUT with a txn ID. */
const idempotentMethods = new Set(['GET', 'HEAD', 'PUT', 'DELETE', 'OPTIONS'])

/** Errors that prove the request never reached the upstream: safe to send elsewhere, any method. */
const notDeliveredCodes = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'UND_ERR_CONNECT_TIMEOUT'])

/** Hop-by-hop headers (RFC 9110 7.6.1) plus `expect`, which the proxy answers itself. */
const hopByHop = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'expect', 'proxy-authorization', 'proxy-authenticate'])

/**
 * A small reverse proxy for `myelin cluster`: classifies each client request with the seed's
 * path table (`path-table.ts`) and forwards it over keep-alive undici pools, streaming bodies both
 * ways and preserving status and headers (minus hop-by-hop ones); adds `X-Forwarded-For` and
 * `X-Forwarded-Proto`. Only `/_matrix/`, `/_synapse/` and `/.well-known/matrix/` are forwarded:
 * the router answers `/health` itself and 404 `M_UNRECOGNIZED` for anything else (the workers'
 * `/metrics` stays off the client port).
 *
 * Failure handling, per request, over the plan of `UpstreamSet.plan`:
 * - connection refused / unreachable / connect timeout: the request was not delivered; the
 *   upstream is marked down and the next upstream is tried, whatever the method;
 * - any other failure before the response head (reset, closed socket): the next upstream is tried
 *   only for idempotent methods, since the first may have acted on the request;
 * - a body that was streamed rather than buffered (see `maxReplayBodyBytes`) is never replayed;
 * - when no attempt succeeds the client gets a Matrix error with `retry_after_ms`: 503 if nothing
 *   was delivered, 502 otherwise;
 * - a failure after the response head was sent ends the client connection (the status is gone).
 * A client that disconnects aborts its upstream request; nothing a client does throws out of the
 * request handler.
 *
 * @example
 * const router = createRouter({
 *   upstreams: { api: [{ name: 'api1', host: '127.0.0.1', port: 8081 }], persisters: new Map([['persister1', { name: 'persister1', host: '127.0.0.1', port: 8091 }]]) },
 *   shardMap: createShardMap({ writers: ['persister1'] }),
 *   log,
 * })
 * const { port } = await router.listen(8008, '127.0.0.1')
 * // after a supervised child restarted on a new port:
 * router.setUpstreams(upstreamsFromProcesses(supervisor.processes()))
 * await router.close()
 */
export function createRouter(options: RouterOptions): Router {
  const log = options.log.child({ component: 'router' })
  const maxReplayBodyBytes = options.maxReplayBodyBytes ?? 1024 * 1024
  const retryAfterMs = options.retryAfterMs ?? 1000
  const setOptions = { shardMap: options.shardMap, downMs: options.downMs ?? 1000, clock: options.clock ?? Date.now }
  let current: UpstreamSet = createUpstreamSet(options.upstreams, setOptions)
  const pools = new Map<string, Pool>()
  const metrics = options.registry === undefined ? undefined : routerMetrics(options.registry)

  const originOf = (u: Upstream): string => `http://${u.host.includes(':') ? `[${u.host}]` : u.host}:${u.port}`

  function poolFor(upstream: Upstream): Pool {
    const origin = originOf(upstream)
    let pool = pools.get(origin)
    if (!pool) {
      pool = new Pool(origin, { connections: null, keepAliveTimeout: options.keepAliveTimeoutMs ?? 30_000 })
      pools.set(origin, pool)
    }
    return pool
  }

  function retirePools(keep: RouterUpstreams): void {
    const live = new Set([...keep.api, ...keep.persisters.values()].map(originOf))
    for (const [origin, pool] of pools) {
      if (live.has(origin)) continue
      pools.delete(origin)
      pool.close().catch((err: unknown) => log.debug({ err }, 'closing a retired upstream pool failed'))
    }
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      log.error({ err }, 'request handling failed')
      if (!res.headersSent && !res.destroyed) sendError(res, 502, 'bad gateway')
      else res.destroy()
    })
  })
  server.on('clientError', (err, socket) => {
    log.debug({ err }, 'client connection error')
    socket.destroy()
  })

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = (req.method ?? 'GET').toUpperCase()
    const path = req.url ?? '/'
    if (!publicPrefixes.some((prefix) => path.startsWith(prefix))) {
      // Workers also serve /metrics and /health on their ports: those stay internal.
      if (path === '/health') res.writeHead(200, { 'content-type': 'text/plain' }).end('OK')
      else sendError(res, 404, 'Unrecognized request', undefined, 'M_UNRECOGNIZED')
      return
    }
    const route = classifyRequest(method, path)
    if (metrics !== undefined) {
      const stopTimer = metrics.duration.startTimer({ route: route.kind })
      metrics.inFlight.inc()
      res.once('close', () => {
        metrics.inFlight.dec()
        stopTimer({ status: res.headersSent ? String(res.statusCode) : 'aborted' })
      })
    }
    const upstreams = current.plan(route, route.kind === 'sync' ? userKeyFromRequest(req.headers.authorization, path) : undefined)
    const aborter = new AbortController()
    res.on('close', () => {
      if (!res.writableFinished) aborter.abort()
    })
    req.on('error', (err) => log.debug({ err }, 'client request stream failed'))
    res.on('error', (err) => log.debug({ err }, 'client response stream failed'))

    const body = await readBody(req, maxReplayBodyBytes)
    if (body === undefined || aborter.signal.aborted) {
      res.destroy()
      return
    }
    const replayable = body.kind !== 'stream'
    const headers = forwardHeaders(req, body)
    let delivered = false
    for (const [attempt, upstream] of upstreams.entries()) {
      try {
        const response = await poolFor(upstream).request({
          path,
          method,
          headers,
          body: body.kind === 'stream' ? req : body.kind === 'buffer' ? body.data : null,
          signal: aborter.signal,
        })
        log.debug({ route: route.kind, upstream: upstream.name, status: response.statusCode, attempt }, 'proxied')
        res.writeHead(response.statusCode, responseHeaders(response.headers))
        const err = await relay(response.body, res)
        if (err !== undefined && !aborter.signal.aborted) log.warn({ err, upstream: upstream.name }, 'response body failed mid-stream')
        return
      } catch (err) {
        if (aborter.signal.aborted) return
        const code = (err as { code?: unknown }).code
        const notDelivered = typeof code === 'string' && notDeliveredCodes.has(code)
        if (notDelivered) current.markDown(upstream)
        else delivered = true
        metrics?.upstreamFailures.inc({ upstream: upstream.name, delivered: String(!notDelivered) })
        const retry = replayable && (notDelivered || idempotentMethods.has(method))
        log.warn({ err, route: route.kind, upstream: upstream.name, attempt, retry }, 'upstream request failed')
        if (!retry) break
      }
    }
    if (upstreams.length === 0) log.error({ route: route.kind }, 'no upstream for request')
    if (delivered) sendError(res, 502, 'an upstream failed while handling the request', retryAfterMs)
    else sendError(res, 503, 'no upstream is available', retryAfterMs)
  }

  return {
    listen(port, host = '127.0.0.1') {
      return new Promise((resolve, reject) => {
        server.once('error', reject)
        server.listen(port, host, () => {
          server.off('error', reject)
          const address = server.address() as AddressInfo
          log.info({ host: address.address, port: address.port }, 'router listening')
          resolve({ host: address.address, port: address.port })
        })
      })
    },
    setUpstreams(upstreams) {
      current = createUpstreamSet(upstreams, setOptions)
      retirePools(current.upstreams)
      log.info(
        { api: current.upstreams.api.map((u) => `${u.name}:${u.port}`), persisters: [...current.upstreams.persisters.values()].map((u) => `${u.name}:${u.port}`) },
        'upstreams updated',
      )
    },
    upstreams: () => current.upstreams,
    async close(graceMs = 5000) {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()))
      server.closeIdleConnections()
      const timer = setTimeout(() => server.closeAllConnections(), graceMs)
      await closed
      clearTimeout(timer)
      await Promise.all([...pools.values()].map((pool) => pool.destroy()))
      pools.clear()
    },
  }
}

function routerMetrics(registry: Registry) {
  return {
    duration: new Histogram({
      name: 'myelin_router_request_duration_seconds',
      help: 'Client requests through the router, by path-table route and status (aborted: the client left first)',
      labelNames: ['route', 'status'] as const,
      buckets: [...httpLatencyBuckets],
      registers: [registry],
    }),
    inFlight: new Gauge({ name: 'myelin_router_requests_in_flight', help: 'Client requests the router is handling', registers: [registry] }),
    upstreamFailures: new Counter({
      name: 'myelin_router_upstream_failures_total',
      help: 'Failed attempts to an upstream (delivered=false: the request never reached it and went elsewhere)',
      labelNames: ['upstream', 'delivered'] as const,
      registers: [registry],
    }),
  }
}

/**
 * Pipes an upstream body into the client response; resolves when the response is done (or
 * destroyed), with the body's error if it failed. `stream.pipeline` did the same but allocated
 * an AbortController per call and aborted it on every finish: a DOMException with a stack trace
 * per proxied request, 5% of the router's CPU.
 */
function relay(body: Readable, res: ServerResponse): Promise<Error | undefined> {
  return new Promise((resolve) => {
    let failure: Error | undefined
    body.once('error', (err) => {
      failure = err
      res.destroy(err)
    })
    res.once('close', () => {
      if (!body.readableEnded) body.destroy()
      resolve(failure)
    })
    body.pipe(res)
  })
}

type RequestBody = { kind: 'none' } | { kind: 'buffer'; data: Buffer } | { kind: 'stream' }

/**
 * Buffers small bodies (replayable) and leaves large or chunked ones to stream; `undefined` when
 * the client's body failed before it was complete.
 */
async function readBody(req: IncomingMessage, maxReplayBodyBytes: number): Promise<RequestBody | undefined> {
  const lengthHeader = req.headers['content-length']
  if (req.headers['transfer-encoding'] !== undefined) return { kind: 'stream' }
  if (lengthHeader === undefined || lengthHeader === '0') return { kind: 'none' }
  const length = Number(lengthHeader)
  if (!Number.isSafeInteger(length) || length > maxReplayBodyBytes) return { kind: 'stream' }
  const chunks: Buffer[] = []
  try {
    for await (const chunk of req) chunks.push(chunk as Buffer)
  } catch {
    return undefined
  }
  return { kind: 'buffer', data: Buffer.concat(chunks) }
}

function forwardHeaders(req: IncomingMessage, body: RequestBody): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {}
  const connectionTokens = new Set(
    String(req.headers.connection ?? '')
      .split(',')
      .map((t) => t.trim().toLowerCase())
      .filter((t) => t.length > 0),
  )
  for (const [name, value] of Object.entries(req.headers)) {
    if (value === undefined || hopByHop.has(name) || connectionTokens.has(name)) continue
    out[name] = value
  }
  if (body.kind === 'buffer') out['content-length'] = String(body.data.length)
  else if (body.kind === 'none') delete out['content-length']
  const peer = req.socket.remoteAddress
  if (peer !== undefined) {
    const prior = req.headers['x-forwarded-for']
    out['x-forwarded-for'] = prior ? `${String(prior)}, ${peer}` : peer
  }
  out['x-forwarded-proto'] = 'http'
  return out
}

function responseHeaders(headers: IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {}
  const connectionTokens = new Set(
    String(headers.connection ?? '')
      .split(',')
      .map((t) => t.trim().toLowerCase()),
  )
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || hopByHop.has(name) || connectionTokens.has(name)) continue
    out[name] = value
  }
  return out
}

/** A Matrix error answer from the router itself. */
function sendError(res: ServerResponse, status: number, error: string, retryAfterMs?: number, errcode = 'M_UNKNOWN'): void {
  if (res.headersSent || res.destroyed) {
    res.destroy()
    return
  }
  const body = JSON.stringify({ errcode, error, ...(retryAfterMs === undefined ? {} : { retry_after_ms: retryAfterMs }) })
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
  res.end(body)
}
