import { setTimeout as sleep } from 'node:timers/promises'
import { Counter, Histogram, type Registry } from 'prom-client'
import { Agent, errors as undiciErrors, request } from 'undici'
import { RejectedEventError, type RejectionCode } from '../persisters/persist-errors.js'
import type { ShardMap } from '../persisters/shard-map.js'
import { maxRequestsPerBatch, type BatchItemAnswer, type PersistedEventWire } from '../persisters/replication-routes.js'
import type { MyelinConfig } from '../storage/config.js'
import { StorageError } from '../storage/errors.js'
import type { Logger } from '../storage/logger.js'
import type { StreamTracker } from '../storage/streams/stream-tracker.js'
import { readYourWritesMs, tokenCovering, type EventSender, type PersistedEvent, type PersistRequest } from './room-services.js'

/** Options of `createReplicationSender`. */
export interface ReplicationSenderOptions {
  readonly instanceMap: MyelinConfig['instance_map']
  readonly secret: string
  readonly shardMap: ShardMap
  readonly tracker: StreamTracker
  readonly log: Logger
  readonly registry?: Registry
  /** Total time one send may spend on attempts before answering 503 (default 10 s). */
  readonly deadlineMs?: number
  /** Per-attempt timeout (default 8 s). */
  readonly attemptTimeoutMs?: number
  /** Longest wait for this process's tracker to cover the answer (default 5 s). */
  readonly readYourWritesMs?: number
}

export interface ReplicationSender extends EventSender {
  /** Closes the connection pools. */
  close(): Promise<void>
}

/** Statuses after which the same request is retried (the outcome is unknown or transient). */
const retryableStatuses = new Set([502, 503, 504])
/** Rejection codes the persister answers per event, by status. */
const rejectionByStatus: Record<number, RejectionCode> = { 403: 'ES_FORBIDDEN', 413: 'ES_EVENT_TOO_LARGE', 400: 'ES_BAD_EVENT', 404: 'ES_ROOM_NOT_FOUND' }

/**
 * Sends events to the room's owning persister over HTTP replication
 * (`POST /_myelin/replication/persist/<requestId>`, ARCHITECTURE §2 step 3), on keep-alive
 * connections (one undici pool per persister).
 *
 * - Connection errors, timeouts and 502/503/504 are retried with the SAME request ID (the
 *   persister answers a repeat with its first answer, so a retry never duplicates), with
 *   backoff, until `deadlineMs`; then `ES_UNAVAILABLE` (the API answers 503 with `retry_after_ms`).
 * - A 421 not-owner answer names the owner: the request goes there (once per hop, at most
 *   as many hops as writers) — a stale shard map heals itself.
 * - 403/413/400/404 become `RejectedEventError`s with the persister's reason.
 * - After the answer, waits (bounded) until this process's tracker covers the new events, so
 *   the client's next read sees its own write.
 * - First attempts to the same persister made in the same event-loop turn travel together in
 *   one `persist_batch` call (at most `maxRequestsPerBatch`): under load an api worker sends
 *   one request where it had dozens. Each request keeps its own ID and answer; when the batch
 *   call itself fails, each request makes its first attempt alone.
 *
 * @example
 * const sender = createReplicationSender({ instanceMap: config.instance_map, secret, shardMap, tracker, log })
 * const [event] = await sender.send({ requestId: randomUUID(), roomId, events: [message] })
 */
export function createReplicationSender(options: ReplicationSenderOptions): ReplicationSender {
  const log = options.log.child({ component: 'replication-sender' })
  const deadlineMs = options.deadlineMs ?? 10_000
  const attemptTimeoutMs = options.attemptTimeoutMs ?? 8_000
  const waitMs = options.readYourWritesMs ?? readYourWritesMs
  const agent = new Agent({ keepAliveTimeout: 30_000, connections: 64, pipelining: 1 })
  const authorization = `Bearer ${options.secret}`
  const registers = options.registry ? [options.registry] : []
  const latency = new Histogram({
    name: 'myelin_replication_send_seconds',
    help: 'Time from handing a request to a persister until its answer, by persister and outcome',
    labelNames: ['persister', 'outcome'],
    buckets: [0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers,
  })
  const retries = new Counter({ name: 'myelin_replication_retries_total', help: 'Replication attempts retried, by reason', labelNames: ['reason'], registers })
  const batchSizes = new Histogram({
    name: 'myelin_replication_batch_requests',
    help: 'Persist requests per replication call (first attempts coalesced per persister)',
    labelNames: ['persister'],
    buckets: [1, 2, 4, 8, 16, 32, 64],
    registers,
  })

  function baseOf(writer: string): string {
    const instance = options.instanceMap[writer]
    if (!instance) throw new StorageError('ES_UNAVAILABLE', `no instance_map entry for persister ${writer}`)
    return `${instance.tls ? 'https' : 'http'}://${instance.host}:${instance.port}/_myelin/replication`
  }

  function post(url: string, body: string) {
    return request(url, {
      method: 'POST',
      dispatcher: agent,
      headers: { authorization, 'content-type': 'application/json' },
      body,
      headersTimeout: attemptTimeoutMs,
      bodyTimeout: attemptTimeoutMs,
    })
  }

  /** First attempts waiting for this event-loop turn to end, by persister. */
  const queued = new Map<string, { req: PersistRequest; body: string; resolve: (outcome: Outcome) => void; reject: (err: unknown) => void }[]>()

  /** The first attempt of `req`: coalesced with the others to `writer` made in this turn. */
  function firstAttempt(writer: string, req: PersistRequest, body: string): Promise<Outcome> {
    return new Promise((resolve, reject) => {
      let queue = queued.get(writer)
      if (queue === undefined) {
        queue = []
        queued.set(writer, queue)
        setImmediate(() => flush(writer))
      }
      queue.push({ req, body, resolve, reject })
    })
  }

  function flush(writer: string): void {
    const queue = queued.get(writer) ?? []
    queued.delete(writer)
    for (const chunk of batchesOf(queue)) {
      batchSizes.observe({ persister: writer }, chunk.length)
      if (chunk.length === 1) {
        const [only] = chunk as [(typeof chunk)[number]]
        attempt(writer, only.req, only.body).then(only.resolve, only.reject)
        continue
      }
      void attemptBatch(writer, chunk.map((q) => q.req)).then((answers) =>
        chunk.forEach((q, k) => {
          const answer = answers?.[k]
          if (answer !== undefined) q.resolve({ status: answer.status, json: answer.body })
          else attempt(writer, q.req, q.body).then(q.resolve, q.reject)
        }),
      )
    }
  }

  /** One `persist_batch` call; undefined when the call as a whole failed (each request then goes alone). */
  async function attemptBatch(writer: string, reqs: readonly PersistRequest[]): Promise<readonly BatchItemAnswer[] | undefined> {
    const started = performance.now()
    try {
      const body = JSON.stringify({ requests: reqs.map((r) => ({ request_id: r.requestId, room_id: r.roomId, events: r.events })) })
      const res = await post(`${baseOf(writer)}/persist_batch`, body)
      const json = (await res.body.json().catch(() => ({}))) as { results?: unknown }
      latency.observe({ persister: writer, outcome: `batch_${res.statusCode}` }, (performance.now() - started) / 1000)
      if (res.statusCode !== 200 || !Array.isArray(json.results) || json.results.length !== reqs.length) {
        log.warn({ persister: writer, status: res.statusCode }, 'persist_batch failed; sending its requests one by one')
        return undefined
      }
      return json.results as BatchItemAnswer[]
    } catch (err) {
      latency.observe({ persister: writer, outcome: 'batch_error' }, (performance.now() - started) / 1000)
      log.warn({ persister: writer, err }, 'persist_batch failed; sending its requests one by one')
      return undefined
    }
  }

  async function attempt(writer: string, req: PersistRequest, body: string): Promise<Outcome> {
    const started = performance.now()
    try {
      const res = await post(`${baseOf(writer)}/persist/${encodeURIComponent(req.requestId)}`, body)
      const json = (await res.body.json().catch(() => ({}))) as Record<string, unknown>
      latency.observe({ persister: writer, outcome: String(res.statusCode) }, (performance.now() - started) / 1000)
      return { status: res.statusCode, json }
    } catch (err) {
      latency.observe({ persister: writer, outcome: 'error' }, (performance.now() - started) / 1000)
      throw err
    }
  }

  async function persistRemote(req: PersistRequest): Promise<PersistedEvent[]> {
    const body = JSON.stringify({ room_id: req.roomId, events: req.events })
    const deadline = Date.now() + deadlineMs
    let writer = options.shardMap.ownerOf(req.roomId)
    let hops = 0
    for (let attemptNo = 0; ; attemptNo++) {
      let outcome: Outcome | undefined
      let failure: unknown
      try {
        outcome = await (attemptNo === 0 ? firstAttempt(writer, req, body) : attempt(writer, req, body))
      } catch (err) {
        if (!isTransportError(err)) throw err
        failure = err
      }
      if (outcome?.status === 200) return parseAnswer(outcome.json)
      if (outcome?.status === 421) {
        const owner = outcome.json['owner']
        if (typeof owner !== 'string' || !(owner in options.instanceMap) || ++hops > options.shardMap.writers.length) {
          throw new StorageError('ES_UNAVAILABLE', `persister ${writer} refused room ${req.roomId} and named no reachable owner`)
        }
        log.info({ roomId: req.roomId, from: writer, to: owner }, 'room owned elsewhere; following the owner')
        retries.inc({ reason: 'not_owner' })
        writer = owner
        continue
      }
      if (outcome !== undefined && !retryableStatuses.has(outcome.status)) throw errorFromAnswer(outcome.status, outcome.json, writer)
      const reason = outcome === undefined ? 'transport' : `status_${outcome.status}`
      const backoff = Math.min(1000, 25 * 2 ** attemptNo)
      if (Date.now() + backoff >= deadline) {
        log.warn({ persister: writer, roomId: req.roomId, reason, err: failure }, 'persister unavailable; giving up for now')
        throw new StorageError('ES_UNAVAILABLE', `persister ${writer} unavailable (${reason})`)
      }
      retries.inc({ reason })
      await sleep(backoff)
    }
  }

  return {
    async send(req) {
      const persisted = await persistRemote(req)
      await options.tracker.waitFor(tokenCovering(options.tracker, persisted), waitMs)
      return persisted
    },
    close: () => agent.close(),
  }
}

/** Most body bytes coalesced into one `persist_batch` call; bigger requests travel alone. */
const maxBatchBodyBytes = 1024 * 1024

/** Splits queued requests into batches of at most `maxRequestsPerBatch` and `maxBatchBodyBytes`. */
function batchesOf<Q extends { body: string }>(queue: readonly Q[]): Q[][] {
  const batches: Q[][] = []
  let current: Q[] = []
  let bytes = 0
  for (const item of queue) {
    if (current.length > 0 && (current.length === maxRequestsPerBatch || bytes + item.body.length > maxBatchBodyBytes)) {
      batches.push(current)
      current = []
      bytes = 0
    }
    current.push(item)
    bytes += item.body.length
  }
  if (current.length > 0) batches.push(current)
  return batches
}

/** A persister's answer to one persist request: its status and JSON body. */
interface Outcome {
  readonly status: number
  readonly json: Record<string, unknown>
}

function parseAnswer(json: Record<string, unknown>): PersistedEvent[] {
  const events = json['events']
  if (!Array.isArray(events)) throw new StorageError('ES_UNAVAILABLE', 'persister answered without events')
  return (events as PersistedEventWire[]).map((e) => ({ event_id: e.event_id, stream_ordering: BigInt(e.stream_ordering), writer: e.writer }))
}

function errorFromAnswer(status: number, json: Record<string, unknown>, writer: string): StorageError {
  const message = typeof json['error'] === 'string' ? json['error'] : `persister ${writer} answered ${status}`
  const code = rejectionByStatus[status]
  if (code !== undefined) {
    const index = typeof json['event_index'] === 'number' ? json['event_index'] : 0
    return new RejectedEventError(code, index, message.replace(/^event \d+: /, ''))
  }
  if (status === 401) return new StorageError('ES_CONFIG_INVALID', `persister ${writer} refused the replication secret`)
  return new StorageError('ES_UNAVAILABLE', message)
}

function isTransportError(err: unknown): boolean {
  if (err instanceof undiciErrors.UndiciError) return true
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && /^(ECONNREFUSED|ECONNRESET|EPIPE|ETIMEDOUT|EHOSTUNREACH|ENOTFOUND|UND_ERR)/.test(code)
}
