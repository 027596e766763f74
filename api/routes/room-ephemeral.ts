import type { FastifyPluginAsync } from 'fastify'
import { getRoomHead } from '../../storage/events/event-store.js'
import { eventsNotInRoom, putFullyRead, putReceipt, receiptTypes, type ReceiptOutcome, type ReceiptType } from '../../storage/receipts.js'
import { currentMembership } from '../../storage/state-entries.js'
import { setTyping } from '../../storage/typing.js'
import { clientRoute, emptyBodyAsObject } from '../client-route.js'
import { forbidden, invalidParam, notFound } from '../errors.js'
import { requireUser } from '../require-user.js'
import { checkRoomId } from '../room-ids.js'

/**
 * Read receipts, read markers and typing notifications (client-server API "Receipts", "Fully
 * read markers", "Typing Notifications"):
 *
 * - `POST /rooms/{roomId}/receipt/{receiptType}/{eventId}` with an optional `thread_id`:
 *   `m.read` and `m.read.private` are stored as receipts (storage/receipts.ts; the private one
 *   is shown to its own user only), `m.fully_read` moves the room's `m.fully_read` account data.
 * - `POST /rooms/{roomId}/read_markers` with any of `m.fully_read`, `m.read`, `m.read.private`.
 * - `PUT /rooms/{roomId}/typing/{userId}` with `typing` and, when typing, an optional `timeout`
 *   (ms; default 30 s, at most 120 s): only for the requester's own user ID (403 otherwise).
 *
 * The requester must be joined to the room (403 otherwise; 404 for an unknown room), and every
 * event named must be an event of the room (404 `M_NOT_FOUND`, and nothing of the request is
 * stored). A receipt or marker for an event older than the current one is accepted and changes
 * nothing. Any api process may serve these: receipts and typing are written to the database
 * under the ephemeral stream's lock (storage/ordered-streams.ts), and every process's /sync
 * long-polls see them (api/position-watch.ts).
 */

const eventIdParam = { type: 'string', minLength: 2, maxLength: 255, pattern: '^\\$' } as const
const receiptParams = {
  type: 'object',
  required: ['roomId', 'receiptType', 'eventId'],
  properties: {
    roomId: { type: 'string', minLength: 1, maxLength: 2048 },
    receiptType: { type: 'string', enum: [...receiptTypes, 'm.fully_read'] },
    eventId: eventIdParam,
  },
} as const
const roomParams = { type: 'object', required: ['roomId'], properties: { roomId: { type: 'string', minLength: 1, maxLength: 2048 } } } as const
const receiptBody = { type: 'object', properties: { thread_id: { type: 'string', minLength: 1, maxLength: 255 } } } as const
const typingParams = {
  type: 'object',
  required: ['roomId', 'userId'],
  properties: { roomId: { type: 'string', minLength: 1, maxLength: 2048 }, userId: { type: 'string', minLength: 1, maxLength: 255 } },
} as const
const typingBody = {
  type: 'object',
  required: ['typing'],
  properties: { typing: { type: 'boolean' }, timeout: { type: 'integer', minimum: 0, maximum: 2 ** 53 - 1 } },
} as const
const markersBody = {
  type: 'object',
  properties: { 'm.fully_read': eventIdParam, 'm.read': eventIdParam, 'm.read.private': eventIdParam },
} as const

type MarkerType = ReceiptType | 'm.fully_read'
type Markers = Partial<Record<MarkerType, string>>

/**
 * The receipt, read marker and typing routes.
 *
 * @example
 * const app = await buildApp(ctx, { plugins: [roomEphemeralRoutes] })
 * await app.inject({ method: 'POST', url: `/_matrix/client/v3/rooms/${roomId}/receipt/m.read/${eventId}`, headers, payload: {} })
 */
export const roomEphemeralRoutes: FastifyPluginAsync = async (app) => {
  const { db, clock } = app.myelin

  /** The room ID of a path parameter, once `userId` is known to be joined to it. */
  async function joinedRoom(raw: string, userId: string): Promise<string> {
    const roomId = checkRoomId(raw)
    if ((await currentMembership(db, roomId, userId)) === 'join') return roomId
    if ((await getRoomHead(db, roomId)) === undefined) throw notFound(`Unknown room ${roomId}`)
    throw forbidden(`${userId} is not in the room`)
  }

  /** Stores each marker, after checking that every event is in the room. */
  async function store(roomId: string, userId: string, markers: Markers, threadId?: string): Promise<void> {
    const named = [...new Set(Object.values(markers))]
    const missing = await eventsNotInRoom(db, roomId, named)
    if (missing.length > 0) throw notFound(`Event ${missing[0]} is not in the room`)
    const ts = clock()
    const outcomes: ReceiptOutcome[] = []
    for (const [type, eventId] of Object.entries(markers) as [MarkerType, string][]) {
      outcomes.push(
        type === 'm.fully_read'
          ? await putFullyRead(db, { roomId, userId, eventId })
          : await putReceipt(db, { roomId, userId, type, eventId, ts, ...(threadId !== undefined && { threadId }) }),
      )
    }
    // Checked above; only a purge between the check and the write gets here.
    if (outcomes.some((outcome) => outcome.kind === 'event-not-found')) throw notFound('Event is not in the room')
  }

  clientRoute<{ Params: { roomId: string; receiptType: MarkerType; eventId: string }; Body: { thread_id?: string } }>(app, {
    method: 'POST',
    path: '/rooms/:roomId/receipt/:receiptType/:eventId',
    preValidation: emptyBodyAsObject,
    schema: { params: receiptParams, body: receiptBody },
    handler: async (request) => {
      const { userId } = await requireUser(request)
      const { receiptType, eventId } = request.params
      const threadId = request.body.thread_id
      if (receiptType === 'm.fully_read' && threadId !== undefined) throw invalidParam('m.fully_read cannot be given a thread_id')
      if (threadId !== undefined && threadId !== 'main' && !threadId.startsWith('$')) throw invalidParam('thread_id must be "main" or an event ID')
      const roomId = await joinedRoom(request.params.roomId, userId)
      await store(roomId, userId, { [receiptType]: eventId }, threadId)
      return {}
    },
  })

  clientRoute<{ Params: { roomId: string }; Body: Markers }>(app, {
    method: 'POST',
    path: '/rooms/:roomId/read_markers',
    schema: { params: roomParams, body: markersBody },
    handler: async (request) => {
      const { userId } = await requireUser(request)
      const roomId = await joinedRoom(request.params.roomId, userId)
      const { 'm.fully_read': fullyRead, 'm.read': read, 'm.read.private': readPrivate } = request.body
      await store(roomId, userId, {
        ...(fullyRead !== undefined && { 'm.fully_read': fullyRead }),
        ...(read !== undefined && { 'm.read': read }),
        ...(readPrivate !== undefined && { 'm.read.private': readPrivate }),
      })
      return {}
    },
  })

  clientRoute<{ Params: { roomId: string; userId: string }; Body: { typing: boolean; timeout?: number } }>(app, {
    method: 'PUT',
    path: '/rooms/:roomId/typing/:userId',
    schema: { params: typingParams, body: typingBody },
    handler: async (request) => {
      const { userId, shadowBanned } = await requireUser(request)
      if (request.params.userId !== userId) throw forbidden('Cannot set the typing state of another user')
      const roomId = await joinedRoom(request.params.roomId, userId)
      const { typing, timeout } = request.body
      // A shadow-banned user's typing is answered and shown to no one.
      if (shadowBanned) return {}
      await setTyping(db, { roomId, userId, typing, ...(timeout !== undefined && { timeoutMs: timeout }), now: clock() })
      return {}
    },
  })
}
