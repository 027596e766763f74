import { createServer as createNetServer, type AddressInfo, type Socket } from 'node:net'
import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import type { ShardMap } from '../../persisters/shard-map.js'
import type { Logger } from '../../storage/logger.js'
import { httpLatencyBuckets } from '../http-metrics.js'
import { BodyTracker, headerValue, headLength, HttpParseError, parseRequestHead, parseResponseHead, serializeHead, type BodyFraming, type RequestHead, type ResponseHead } from './http1.js'
import { classifyRequest, type Route } from './path-table.js'
import { ConnectError, originOf, UpstreamPool } from './upstream-pool.js'
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
const notDeliveredCodes = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'CONNECT_TIMEOUT'])

/** An idle client connection closes after this long (node:http's default keep-alive timeout). */
const clientKeepAliveMs = 5_000
/** A client has this long to send a complete request head (node:http's `headersTimeout`). */
const headersTimeoutMs = 60_000
/** Opening a connection to an upstream gives up after this long (then: not delivered). */
const connectTimeoutMs = 10_000
/** Bytes a client may pipeline behind a request in flight before the router stops reading. */
const maxPipelinedBytes = 1024 * 1024

const emptyBuffer: Buffer = Buffer.alloc(0)
const continueLine = Buffer.from('HTTP/1.1 100 Continue\r\n\r\n', 'latin1')
const reasons: Record<number, string> = { 200: 'OK', 400: 'Bad Request', 404: 'Not Found', 431: 'Request Header Fields Too Large', 502: 'Bad Gateway', 503: 'Service Unavailable' }

/**
 * A small reverse proxy for `myelin cluster`: classifies each client request with the seed's
 * path table (`path-table.ts`) and forwards it over keep-alive connections to the upstreams,
 * bodies streaming both ways byte for byte, status and headers preserved (minus hop-by-hop
 * ones); adds `X-Forwarded-For` and `X-Forwarded-Proto`. Only `/_matrix/`, `/_synapse/` and
 * `/.well-known/matrix/` are forwarded: the router answers `/health` itself and 404
 * `M_UNRECOGNIZED` for anything else (the workers' `/metrics` stays off the client port).
 *
 * It speaks HTTP/1.1 on plain sockets (`http1.ts`) rather than through node:http and an HTTP
 * client: every client send crosses it, and the earlier node:http + undici router cost about
 * twice the CPU per proxied send (100–170 µs against 52–90 µs back to back; the `router`
 * benchmark of `make bench`, `scripts/bench/RESULTS.md`).
 * Messages are parsed strictly (no bare LF, no folding, one Content-Length, not both framings):
 * a malformed request gets 400 (431 for a head over 16 KiB) and its connection closes.
 * `Expect: 100-continue` is answered by the router.
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
 * A client that disconnects aborts its upstream request (the upstream connection closes); nothing
 * a client does throws out of the connection handler.
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
  const pool = new UpstreamPool(options.keepAliveTimeoutMs ?? 30_000, connectTimeoutMs)
  const metrics = options.registry === undefined ? undefined : routerMetrics(options.registry)
  const connections = new Set<ClientConnection>()
  let closing = false

  const server = createNetServer({ noDelay: true }, (socket) => {
    const connection = new ClientConnection(socket, handle, log)
    connections.add(connection)
    socket.once('close', () => connections.delete(connection))
    connection.start()
  })
  server.on('error', (err) => log.error({ err }, 'router listener failed'))

  /** Handles one request; resolves true when the connection must close after it. */
  async function handle(conn: ClientConnection, head: RequestHead): Promise<boolean> {
    const method = head.method.toUpperCase()
    const path = head.target
    if (!publicPrefixes.some((prefix) => path.startsWith(prefix))) {
      // Workers also serve /metrics and /health on their ports: those stay internal.
      const done = conn.body.discard()
      if (path === '/health' && method === 'GET') conn.answer(200, 'OK', 'text/plain', closing)
      else conn.answer(404, matrixError('M_UNRECOGNIZED', 'Unrecognized request'), 'application/json', closing)
      return (await done) || closing
    }
    const route = classifyRequest(method, path)
    const stopTimer = metrics?.duration.startTimer({ route: route.kind })
    metrics?.inFlight.inc()
    let status: string = 'aborted'
    try {
      const result = await forward(conn, head, method, route)
      status = result.status
      return result.close
    } finally {
      metrics?.inFlight.dec()
      stopTimer?.({ status })
    }
  }

  async function forward(conn: ClientConnection, head: RequestHead, method: string, route: Route): Promise<{ status: string; close: boolean }> {
    const upstreams = current.plan(route, route.kind === 'sync' ? userKeyFromRequest(headerValue(head.headers, 'authorization'), head.target) : undefined)
    const replayable = head.framing.kind === 'none' || (head.framing.kind === 'length' && head.framing.bytes <= maxReplayBodyBytes)
    if (head.expectContinue && head.framing.kind !== 'none' && !conn.write(continueLine)) await conn.drained()
    const body = replayable ? await conn.body.buffered() : undefined
    if (conn.gone) return { status: 'aborted', close: true }
    const requestHead = forwardedHead(head, conn.remoteAddress)
    let delivered = false
    for (const [attempt, upstream] of upstreams.entries()) {
      try {
        const outcome = await exchange(conn, upstream, requestHead, body, method, head.close || closing)
        log.debug({ route: route.kind, upstream: upstream.name, status: outcome.status, attempt }, 'proxied')
        return outcome
      } catch (err) {
        if (conn.gone) return { status: 'aborted', close: true }
        if (err instanceof ExchangeError && err.afterHead) {
          log.warn({ err: err.cause, upstream: upstream.name }, 'response failed mid-stream')
          conn.destroy()
          return { status: err.status, close: true }
        }
        const notDelivered = err instanceof ConnectError && notDeliveredCodes.has(err.code)
        if (notDelivered) current.markDown(upstream)
        else delivered = true
        metrics?.upstreamFailures.inc({ upstream: upstream.name, delivered: String(!notDelivered) })
        const retry = replayable && (notDelivered || idempotentMethods.has(method))
        log.warn({ err: err instanceof ExchangeError ? err.cause : err, route: route.kind, upstream: upstream.name, attempt, retry }, 'upstream request failed')
        if (!retry) break
      }
    }
    if (upstreams.length === 0) log.error({ route: route.kind }, 'no upstream for request')
    const status = delivered ? 502 : 503
    const done = conn.body.discard()
    conn.answer(status, matrixError('M_UNKNOWN', delivered ? 'an upstream failed while handling the request' : 'no upstream is available', retryAfterMs), 'application/json', head.close || closing)
    return { status: String(status), close: (await done) || head.close || closing }
  }

  /**
   * One attempt: sends the request to `upstream` and relays its response to the client.
   * Resolves when the response is complete; rejects with `ConnectError` (not delivered) or
   * `ExchangeError` (delivered, before or after the response head).
   */
  async function exchange(conn: ClientConnection, upstream: Upstream, requestHead: Buffer, body: Buffer | undefined, method: string, closeAfter: boolean): Promise<{ status: string; close: boolean }> {
    const { socket } = await pool.acquire(upstream.host, upstream.port)
    if (conn.gone) {
      socket.destroy()
      return { status: 'aborted', close: true }
    }
    return new Promise((resolve, reject) => {
      let head = emptyBuffer
      let response: ResponseHead | undefined
      let tracker: BodyTracker | undefined
      let close = closeAfter
      let requestSent = body !== undefined
      const finish = (keep: boolean): void => {
        cleanup()
        pool.release(upstream.host, upstream.port, socket, keep && requestSent && response?.close === false)
        resolve({ status: String(response?.status ?? 0), close })
      }
      const fail = (cause: unknown): void => {
        cleanup()
        socket.destroy()
        reject(new ExchangeError(cause, response !== undefined, String(response?.status ?? 502)))
      }
      const onData = (chunk: Buffer): void => {
        try {
          // The head and the body bytes of one read leave in one write (one syscall).
          let out: Buffer[] | undefined
          if (response === undefined) {
            head = head.length === 0 ? chunk : Buffer.concat([head, chunk])
            out = []
            let length = headLength(head)
            while (length !== -1) {
              const parsed = parseResponseHead(head, length, method)
              const rest = head.subarray(length)
              if (parsed.status >= 200) {
                response = parsed
                chunk = rest
                break
              }
              out.push(serializeHead(parsed.statusLine, parsed.headers)) // 1xx: relayed, then the real head
              head = rest
              length = headLength(head)
            }
            if (response === undefined) {
              if (out.length > 0) conn.write(Buffer.concat(out))
              return
            }
            close ||= response.framing.kind === 'close'
            const keep = response.framing.kind === 'chunked' ? chunkedKept : undefined
            out.push(serializeHead(response.statusLine, response.headers, close ? connectionClose : [], keep))
            tracker = new BodyTracker(response.framing, 502)
          }
          const { used, done } = (tracker as BodyTracker).take(chunk)
          if (used > 0) (out ??= []).push(used === chunk.length ? chunk : chunk.subarray(0, used))
          if (out !== undefined && out.length > 0 && !conn.write(out.length === 1 ? (out[0] as Buffer) : Buffer.concat(out))) {
            socket.pause()
            void conn.drained().then(() => socket.resume())
          }
          if (done) finish(used === chunk.length)
        } catch (err) {
          fail(err)
        }
      }
      const onEnd = (): void => {
        if (response?.framing.kind === 'close') finish(false)
        else fail(new Error('upstream closed the connection before the response was complete'))
      }
      const onError = (err: Error): void => fail(err)
      const cleanup = (): void => {
        socket.off('data', onData)
        socket.off('end', onEnd)
        socket.off('error', onError)
        socket.off('close', onEnd)
        stopWatching()
        conn.body.unpipe()
      }
      const stopWatching = conn.whenGone(() => {
        cleanup()
        socket.destroy()
        resolve({ status: 'aborted', close: true })
      })
      socket.on('data', onData)
      socket.once('end', onEnd)
      socket.once('close', onEnd)
      socket.on('error', onError)
      if (body !== undefined) {
        socket.write(body.length === 0 ? requestHead : Buffer.concat([requestHead, body]))
      } else {
        socket.write(requestHead)
        conn.body.pipe(socket).then(
          () => (requestSent = true),
          () => {},
        )
      }
    })
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
      pool.retire(new Set([...current.upstreams.api, ...current.upstreams.persisters.values()].map((u) => originOf(u.host, u.port))))
      log.info(
        { api: current.upstreams.api.map((u) => `${u.name}:${u.port}`), persisters: [...current.upstreams.persisters.values()].map((u) => `${u.name}:${u.port}`) },
        'upstreams updated',
      )
    },
    upstreams: () => current.upstreams,
    async close(graceMs = 5000) {
      closing = true
      const closed = new Promise<void>((resolve) => server.close(() => resolve()))
      for (const connection of connections) connection.closeIfIdle()
      const timer = setTimeout(() => {
        for (const connection of connections) connection.destroy()
      }, graceMs)
      await closed
      clearTimeout(timer)
      pool.close()
    },
  }
}

const connectionClose = ['connection: close']
const chunkedKept: ReadonlySet<string> = new Set(['transfer-encoding'])

/** A failed attempt after the request was (or may have been) delivered. */
class ExchangeError extends Error {
  constructor(
    override readonly cause: unknown,
    /** The response head already went to the client. */
    readonly afterHead: boolean,
    readonly status: string,
  ) {
    super(cause instanceof Error ? cause.message : String(cause))
    this.name = 'ExchangeError'
  }
}

/** The request head as the upstream gets it: hop-by-hop headers out, X-Forwarded-* in. */
function forwardedHead(head: RequestHead, peer: string | undefined): Buffer {
  const headers = head.headers.filter((h) => h.lower !== 'x-forwarded-for' && h.lower !== 'x-forwarded-proto' && !(head.framing.kind === 'none' && h.lower === 'content-length'))
  const extra: string[] = []
  const prior = headerValue(head.headers, 'x-forwarded-for')
  if (peer !== undefined) extra.push(`x-forwarded-for: ${prior ? `${prior}, ${peer}` : peer}`)
  else if (prior !== undefined) extra.push(`x-forwarded-for: ${prior}`)
  extra.push('x-forwarded-proto: http')
  return serializeHead(`${head.method} ${head.target} HTTP/1.1`, headers, extra, head.framing.kind === 'chunked' ? chunkedKept : undefined)
}

function matrixError(errcode: string, error: string, retryAfterMs?: number): string {
  return JSON.stringify({ errcode, error, ...(retryAfterMs === undefined ? {} : { retry_after_ms: retryAfterMs }) })
}

type RequestHandler = (conn: ClientConnection, head: RequestHead) => Promise<boolean>

/**
 * One client connection: reads request heads one at a time (pipelined requests wait their
 * turn), hands each to the handler with its body, and closes on malformed input, on a handler
 * that asks for it, when idle for `clientKeepAliveMs`, or when a head takes over
 * `headersTimeoutMs`.
 */
class ClientConnection {
  /** Bytes read but not consumed by a request yet. */
  #pending = emptyBuffer
  #busy = false
  #closing = false
  gone = false
  readonly #goneListeners = new Set<() => void>()
  body: RequestBody = new RequestBody(this, { kind: 'none' })

  constructor(
    private readonly socket: Socket,
    private readonly handler: RequestHandler,
    private readonly log: Logger,
  ) {}

  get remoteAddress(): string | undefined {
    return this.socket.remoteAddress
  }

  start(): void {
    const socket = this.socket
    socket.on('error', (err) => this.log.debug({ err }, 'client connection error'))
    socket.on('timeout', () => {
      if (!this.#busy) socket.destroy()
    })
    socket.on('data', (chunk: Buffer) => {
      const rest = this.body.feed(chunk)
      if (rest.length > 0) this.#pending = this.#pending.length === 0 ? rest : Buffer.concat([this.#pending, rest])
      if (this.#busy) {
        if (this.#pending.length > maxPipelinedBytes) socket.pause()
      } else {
        this.#next()
      }
    })
    socket.once('close', () => {
      this.gone = true
      this.#wentAway()
    })
    socket.setTimeout(clientKeepAliveMs)
  }

  /**
   * Calls `listener` once when the client goes away (or its body framing breaks, which ends the
   * connection); returns what removes it.
   */
  whenGone(listener: () => void): () => void {
    this.#goneListeners.add(listener)
    return () => void this.#goneListeners.delete(listener)
  }

  #wentAway(): void {
    const listeners = [...this.#goneListeners]
    this.#goneListeners.clear()
    for (const listener of listeners) listener()
  }

  /** Writes to the client; false when the caller should wait for `drained()`. */
  write(data: Buffer): boolean {
    return this.gone ? true : this.socket.write(data)
  }

  drained(): Promise<void> {
    return this.gone || !this.socket.writableNeedDrain ? Promise.resolve() : new Promise((resolve) => {
      const done = (): void => {
        this.socket.off('drain', done)
        this.socket.off('close', done)
        resolve()
      }
      this.socket.once('drain', done)
      this.socket.once('close', done)
    })
  }

  /** Writes a whole answer of the router's own. */
  answer(status: number, body: string, contentType: string, close: boolean): void {
    const bytes = Buffer.from(body)
    const head = `HTTP/1.1 ${status} ${reasons[status] ?? ''}\r\ncontent-type: ${contentType}\r\ncontent-length: ${bytes.length}\r\n${close ? 'connection: close\r\n' : ''}\r\n`
    this.write(Buffer.concat([Buffer.from(head, 'latin1'), bytes]))
  }

  destroy(): void {
    this.socket.destroy()
  }

  /** Closes the connection now when no request is in flight, else after it (router shutdown). */
  closeIfIdle(): void {
    this.#closing = true
    if (!this.#busy) this.socket.destroy()
  }

  #next(): void {
    if (this.#busy || this.gone) return
    const socket = this.socket
    if (this.#closing) {
      socket.end()
      return
    }
    let head: RequestHead
    try {
      const length = headLength(this.#pending)
      if (length === -1) {
        socket.setTimeout(this.#pending.length === 0 ? clientKeepAliveMs : headersTimeoutMs)
        return
      }
      head = parseRequestHead(this.#pending, length)
      this.#pending = this.#pending.subarray(length)
    } catch (err) {
      this.#reject(err)
      return
    }
    this.#busy = true
    socket.setTimeout(0)
    this.body = new RequestBody(this, head.framing)
    const initial = this.#pending
    this.#pending = emptyBuffer
    const rest = this.body.feed(initial)
    this.#pending = rest
    this.handler(this, head).then(
      (close) => this.#finish(close),
      (err: unknown) => {
        this.log.error({ err }, 'request handling failed')
        socket.destroy()
      },
    )
  }

  #finish(close: boolean): void {
    this.#busy = false
    if (close || this.#closing) {
      this.socket.end()
      return
    }
    if (this.socket.isPaused()) this.socket.resume()
    this.#next()
  }

  /** A malformed request: its status, then close (the rest of the stream cannot be trusted). */
  #reject(err: unknown): void {
    const status = err instanceof HttpParseError && err.status !== 502 ? err.status : 400
    this.log.debug({ err }, 'malformed request')
    this.answer(status, matrixError('M_UNKNOWN', err instanceof Error ? err.message : 'malformed request'), 'application/json', true)
    this.#closing = true
    this.socket.end()
  }

  /** Malformed body framing mid-request: nothing more can be read from this connection. */
  bodyFailed(err: unknown): void {
    this.log.debug({ err }, 'malformed request body')
    this.#wentAway()
    this.socket.destroy()
  }

  pauseReading(): void {
    this.socket.pause()
  }

  resumeReading(): void {
    this.socket.resume()
  }
}

/**
 * The body of the request in flight, as its bytes arrive: held until the handler decides to
 * buffer it whole (`buffered`), stream it into an upstream (`pipe`), or drop it (`discard`).
 */
class RequestBody {
  readonly #tracker: BodyTracker
  #held: Buffer[] = []
  #sink: Socket | undefined
  #discarding = false
  #failed = false
  #waiters: (() => void)[] = []

  constructor(
    private readonly conn: ClientConnection,
    framing: BodyFraming,
  ) {
    this.#tracker = new BodyTracker(framing, 400)
  }

  /** Takes the body's share of `chunk`; returns what follows the body (the next request). */
  feed(chunk: Buffer): Buffer {
    if (this.#tracker.done || this.#failed) return chunk
    let used: number
    try {
      used = this.#tracker.take(chunk).used
    } catch (err) {
      this.#failed = true
      this.conn.bodyFailed(err)
      return emptyBuffer
    }
    const part = used === chunk.length ? chunk : chunk.subarray(0, used)
    if (this.#sink !== undefined) {
      if (!this.#sink.write(part)) {
        this.conn.pauseReading()
        this.#sink.once('drain', () => this.conn.resumeReading())
      }
    } else if (!this.#discarding && part.length > 0) {
      this.#held.push(part)
    }
    if (this.#tracker.done) for (const wake of this.#waiters.splice(0)) wake()
    return used === chunk.length ? emptyBuffer : chunk.subarray(used)
  }

  #complete(): Promise<boolean> {
    if (this.#tracker.done) return Promise.resolve(true)
    if (this.conn.gone || this.#failed) return Promise.resolve(false)
    return new Promise((resolve) => {
      const stopWatching = this.conn.whenGone(() => resolve(false))
      this.#waiters.push(() => {
        stopWatching()
        resolve(true)
      })
    })
  }

  /** The whole body (for bodies small enough to replay); empty if the client left first. */
  async buffered(): Promise<Buffer> {
    await this.#complete()
    return this.#held.length === 1 ? (this.#held[0] as Buffer) : Buffer.concat(this.#held)
  }

  /** Streams the body into `socket`, held bytes first; resolves once all of it was written. */
  async pipe(socket: Socket): Promise<void> {
    this.#sink = socket
    for (const part of this.#held.splice(0)) socket.write(part)
    if (!(await this.#complete())) throw new Error('client left before its request body was complete')
  }

  /** Stops streaming into the current upstream (the attempt ended). */
  unpipe(): void {
    this.#sink = undefined
    this.#discarding = true
    this.conn.resumeReading()
  }

  /**
   * Drops the rest of the body (the router answers without forwarding it); resolves once it has
   * been read, true when the connection cannot be reused (the client left or the framing broke).
   */
  async discard(): Promise<boolean> {
    this.#discarding = true
    this.#held = []
    return !(await this.#complete())
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
