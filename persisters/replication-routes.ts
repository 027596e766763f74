import { createHash, timingSafeEqual } from 'node:crypto'
import type { FastifyError, FastifyPluginAsync, FastifyReply } from 'fastify'
import type { JsonObject } from '../storage/events/redaction.js'
import { StorageError } from '../storage/errors.js'
import type { ErrorCode } from '../storage/errors.js'
import { maxPdusPerImport } from './import-batch.js'
import { maxEventsPerRequest, maxRequestIdLength, newEventJsonSchema } from './new-event.js'
import type { NewEvent, PersistedEvent } from './new-event.js'
import { NotOwnerError, RejectedEventError } from './persist-errors.js'
import type { Persister } from './persister.js'

export interface ReplicationRoutesOptions {
  readonly persister: Persister
  /** The deployment's `replication_secret`; callers send `Authorization: Bearer <secret>`. */
  readonly replicationSecret: string
  /** Largest request body (default 16 MiB: 200 events of up to 64 KiB, plus JSON overhead). */
  readonly bodyLimitBytes?: number
}

/** Wire form of a persisted event: stream orderings are strings (they exceed 2^53 eventually). */
export interface PersistedEventWire {
  readonly event_id: string
  readonly stream_ordering: string
  readonly writer: string
}

/** Matrix status and errcode of each StorageError code the replication endpoints can answer. */
const errorStatus: Partial<Record<ErrorCode, { status: number; errcode: string }>> = {
  ES_NOT_OWNER: { status: 421, errcode: 'MYELIN_NOT_OWNER' },
  ES_FORBIDDEN: { status: 403, errcode: 'M_FORBIDDEN' },
  ES_EVENT_TOO_LARGE: { status: 413, errcode: 'M_TOO_LARGE' },
  ES_BAD_EVENT: { status: 400, errcode: 'M_BAD_JSON' },
  ES_ROOM_NOT_FOUND: { status: 404, errcode: 'M_NOT_FOUND' },
  ES_UNAVAILABLE: { status: 503, errcode: 'M_UNKNOWN' },
}

/** fastify's body parser errors that mean "this is not a JSON body". */
const notJsonCodes = new Set(['FST_ERR_CTP_INVALID_JSON_BODY', 'FST_ERR_CTP_EMPTY_JSON_BODY', 'FST_ERR_CTP_INVALID_MEDIA_TYPE'])

const paramsSchema = {
  type: 'object',
  required: ['requestId'],
  properties: { requestId: { type: 'string', minLength: 1, maxLength: maxRequestIdLength } },
} as const

const persistBodySchema = {
  type: 'object',
  required: ['room_id', 'events'],
  additionalProperties: false,
  properties: {
    room_id: { type: 'string', pattern: '^!' },
    events: { type: 'array', minItems: 1, maxItems: maxEventsPerRequest, items: newEventJsonSchema },
  },
} as const

/** Most persist requests in one `persist_batch` call. */
export const maxRequestsPerBatch = 64

const persistBatchBodySchema = {
  type: 'object',
  required: ['requests'],
  additionalProperties: false,
  properties: {
    requests: {
      type: 'array',
      minItems: 1,
      maxItems: maxRequestsPerBatch,
      items: {
        type: 'object',
        required: ['request_id', 'room_id', 'events'],
        additionalProperties: false,
        properties: { request_id: paramsSchema.properties.requestId, ...persistBodySchema.properties },
      },
    },
  },
} as const

/** One item's answer in a `persist_batch` answer: what the single persist route would answer. */
export interface BatchItemAnswer {
  readonly status: number
  readonly body: Record<string, unknown>
}

const importBodySchema = {
  type: 'object',
  required: ['room_id', 'pdus'],
  additionalProperties: false,
  properties: {
    room_id: { type: 'string', pattern: '^!' },
    pdus: { type: 'array', minItems: 1, maxItems: maxPdusPerImport, items: { type: 'object' } },
  },
} as const

/**
 * The persister's replication endpoints (ARCHITECTURE §2 step 3), as an encapsulated fastify
 * plugin:
 * - `POST /_myelin/replication/persist/:requestId` `{room_id, events: NewEvent[]}`
 *   → 200 `{events: [{event_id, stream_ordering, writer}]}` once committed;
 * - `POST /_myelin/replication/persist_batch` `{requests: [{request_id, room_id, events}]}` (at
 *   most `maxRequestsPerBatch`) → 200 `{results: [{status, body}]}`, one per request, in order,
 *   each what the route above answers for it (requests run concurrently, so a room's requests
 *   share its batch transactions; an api worker coalesces concurrent sends into one call);
 * - `POST /_myelin/replication/import/:requestId` `{room_id, pdus: PDU[]}` → the same shape.
 *
 * Every route needs `Authorization: Bearer <replication_secret>`, compared in constant time
 * (SHA-256 of both sides, then `timingSafeEqual`, so neither content nor length leaks);
 * otherwise 401 `M_UNAUTHORIZED`. Errors: 400 `M_BAD_JSON` (schema) / `M_NOT_JSON`, 403
 * `M_FORBIDDEN`, 404 `M_NOT_FOUND`, 413 `M_TOO_LARGE`, 421 `MYELIN_NOT_OWNER` with `owner`
 * (refresh the shard map and retry there), 503 (outcome unknown: retry with the same request
 * ID), 500 `M_UNKNOWN`. Refused events add `event_index`. Bodies are validated with fastify's
 * default Ajv settings: unknown keys are dropped, not refused; the persister re-checks types.
 *
 * @example
 * const app = fastify()
 * await app.register(replicationRoutes, { persister, replicationSecret: config.replication_secret })
 */
export const replicationRoutes: FastifyPluginAsync<ReplicationRoutesOptions> = async (app, options) => {
  const expected = sha256(options.replicationSecret)
  const bodyLimit = options.bodyLimitBytes ?? 16 * 1024 * 1024
  const { persister } = options

  app.addHook('onRequest', async (request, reply) => {
    const header = request.headers.authorization
    const presented = typeof header === 'string' && header.startsWith('Bearer ') ? header.slice('Bearer '.length) : undefined
    if (presented === undefined || !timingSafeEqual(sha256(presented), expected)) {
      request.log.info('replication request without a valid secret')
      return reply.code(401).send({ errcode: 'M_UNAUTHORIZED', error: 'missing or wrong replication secret' })
    }
    return undefined
  })

  app.setErrorHandler((err: FastifyError, request, reply) => {
    if (err.validation !== undefined) {
      return reply.code(400).send({ errcode: 'M_BAD_JSON', error: err.message })
    }
    if (notJsonCodes.has(err.code)) {
      return reply.code(400).send({ errcode: 'M_NOT_JSON', error: err.message })
    }
    if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      return reply.code(413).send({ errcode: 'M_TOO_LARGE', error: err.message })
    }
    return sendStorageError(reply, err, request.log)
  })

  app.post<{ Params: { requestId: string }; Body: { room_id: string; events: NewEvent[] } }>(
    '/_myelin/replication/persist/:requestId',
    { schema: { params: paramsSchema, body: persistBodySchema }, bodyLimit },
    async (request) => {
      const events = await persister.persist({ requestId: request.params.requestId, roomId: request.body.room_id, events: request.body.events })
      return { events: events.map(toWire) }
    },
  )

  app.post<{ Body: { requests: { request_id: string; room_id: string; events: NewEvent[] }[] } }>(
    '/_myelin/replication/persist_batch',
    { schema: { body: persistBatchBodySchema }, bodyLimit },
    async (request) => {
      const results = await Promise.all(
        request.body.requests.map(async (item): Promise<BatchItemAnswer> => {
          try {
            const events = await persister.persist({ requestId: item.request_id, roomId: item.room_id, events: item.events })
            return { status: 200, body: { events: events.map(toWire) } }
          } catch (err) {
            return storageErrorAnswer(err, request.log)
          }
        }),
      )
      return { results }
    },
  )

  app.post<{ Params: { requestId: string }; Body: { room_id: string; pdus: JsonObject[] } }>(
    '/_myelin/replication/import/:requestId',
    { schema: { params: paramsSchema, body: importBodySchema }, bodyLimit },
    async (request) => {
      const events = await persister.importEvents(request.body.room_id, request.body.pdus)
      return { events: events.map(toWire) }
    },
  )
}

/**
 * Wire form of an answer.
 *
 * @example
 * toWire({ event_id: '$a', stream_ordering: 42n, writer: 'persister1' }) // { event_id: '$a', stream_ordering: '42', writer: 'persister1' }
 */
export function toWire(event: PersistedEvent): PersistedEventWire {
  return { event_id: event.event_id, stream_ordering: event.stream_ordering.toString(), writer: event.writer }
}

function sendStorageError(reply: FastifyReply, err: unknown, log: FastifyReply['log']): FastifyReply {
  const { status, body } = storageErrorAnswer(err, log)
  return reply.code(status).send(body)
}

/** The status and Matrix error body for what `persist` threw, logged at the level it deserves. */
function storageErrorAnswer(err: unknown, log: FastifyReply['log']): BatchItemAnswer {
  const mapped = err instanceof StorageError ? errorStatus[err.code] : undefined
  if (!(err instanceof StorageError) || mapped === undefined) {
    log.error({ err }, 'replication request failed')
    return { status: 500, body: { errcode: 'M_UNKNOWN', error: 'internal error' } }
  }
  const body: Record<string, unknown> = { errcode: mapped.errcode, error: err.message }
  if (err instanceof NotOwnerError) body['owner'] = err.owner
  if (err instanceof RejectedEventError) body['event_index'] = err.eventIndex
  if (mapped.status >= 500) {
    body['retry_after_ms'] = 1000
    log.error({ err }, 'replication request failed')
  } else {
    log.info({ code: err.code }, 'replication request refused')
  }
  return { status: mapped.status, body }
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest()
}
