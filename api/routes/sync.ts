import type { FastifyPluginAsync } from 'fastify'
import type { Kysely } from 'kysely'
import { getFilter } from '../../storage/filters.js'
import type { Database } from '../../storage/schema.js'
import type { RoomStreamToken } from '../../storage/streams/room-stream-token.js'
import { UnreadCounter } from '../../storage/unread-counts.js'
import { parseSyncFilter, parseSyncToken, readSync, serializeSyncToken, syncPositions, type StreamPositions, type SyncToken } from '../../storage/sync.js'
import { toDeviceKey } from '../../storage/to-device.js'
import { clientRoute } from '../client-route.js'
import { createMembershipWatch } from '../membership-watch.js'
import type { WaitOutcome } from '../user-waiters.js'
import type { PresenceState } from '../presence-service.js'
import { clientKeyCounts, deviceKeyCounts } from '../../storage/e2e-keys.js'
import { createPositionWatch, syncStreams } from '../position-watch.js'
import { invalidParam } from '../errors.js'
import { filterSchema } from '../filter-schema.js'
import { requireUser } from '../require-user.js'
import { slidingSyncRoute } from './sliding-sync.js'
import type { RoomServices } from '../room-services.js'

/**
 * `GET /sync` (client-server API): `since`, `timeout` (ms), `full_state`, `filter` (an uploaded
 * filter's ID or inline JSON), `set_presence` (absent: `online`; a syncing user is marked
 * online, or idle with `unavailable`, and kept connected, api/presence-service.ts). The data
 * comes from storage/sync.ts; this file handles tokens and the long-poll.
 *
 * `next_batch` is `<room token>_<account data>_<ephemeral>_<to-device>_<presence>_<device lists>`
 * (storage/sync.ts `parseSyncToken`; malformed: 400 `M_INVALID_PARAM`; the shorter tokens of
 * earlier versions are taken as "no receipts, typing, presence or device list changes before
 * now", and "every to-device message still waiting"). A `since` from the future is clamped to what was ever
 * allocated; one this process's tracker does not cover yet is waited for at most
 * `sinceWaitMs`, then the answer is empty with the same `since` (as Synapse).
 *
 * Long-poll: with nothing new and a `since`, the request waits up to `timeout` for the
 * notifier: on the user's joined rooms, and on any room for a change of the user's own
 * membership (an invite to a new room), which one process-wide `MembershipWatch` reads once
 * per advance for all waiting syncs (api/membership-watch.ts), on the user's account data and
 * on receipts and typing in their joined rooms, on their device's to-device messages, and on the
 * presence and device keys of the users they share a room with (set through any process;
 * api/position-watch.ts polls the streams' positions every 250 ms while syncs wait).
 * A client that disconnects aborts the wait.
 */

/** Longest wait for this process's tracker to cover a client's `since`. */
export const sinceWaitMs = 5_000
/** Longest long-poll a client may ask for. */
export const maxSyncTimeoutMs = 300_000

const maxFilterLength = 20_000

/**
 * The filter of a `filter` query parameter: inline JSON (starting with `{`) checked against
 * `schema`, or an uploaded filter's ID.
 *
 * @throws MatrixError 400 `M_INVALID_PARAM` for malformed JSON, a schema violation or an unknown ID.
 * @example
 * await filterParam(db, userId, '{"room":{"timeline":{"limit":5}}}', filterSchema) // { room: … }
 */
export async function filterParam(db: Kysely<Database>, userId: string, text: string | undefined, schema: JsonSchema): Promise<Record<string, unknown> | undefined> {
  if (text === undefined || text === '') return undefined
  if (text.trimStart().startsWith('{')) {
    let parsed: unknown
    try {
      parsed = JSON.parse(text)
    } catch {
      throw invalidParam('filter is not valid JSON')
    }
    const problem = schemaProblem(parsed, schema, 'filter')
    if (problem !== undefined) throw invalidParam(problem)
    return parsed as Record<string, unknown>
  }
  const stored = await getFilter(db, userId, text)
  if (!stored) throw invalidParam(`Unknown filter ${JSON.stringify(text.slice(0, 40))}`)
  return stored
}

/** The subset of JSON schema the filter schema uses. */
export interface JsonSchema {
  readonly type?: string
  readonly properties?: Readonly<Record<string, JsonSchema>>
  readonly items?: JsonSchema
  readonly enum?: readonly unknown[]
  readonly minimum?: number
  readonly maxItems?: number
  readonly maxLength?: number
}

/** The first way `value` breaks `schema` (unknown properties allowed), or undefined. */
function schemaProblem(value: unknown, schema: JsonSchema, path: string): string | undefined {
  const kind = Array.isArray(value) ? 'array' : value === null ? 'null' : Number.isInteger(value) ? 'integer' : typeof value
  if (schema.type !== undefined && schema.type !== kind && !(schema.type === 'number' && kind === 'integer')) return `${path} must be of type ${schema.type}`
  if (schema.enum !== undefined && !schema.enum.includes(value)) return `${path} must be one of ${schema.enum.join(', ')}`
  if (schema.minimum !== undefined && typeof value === 'number' && value < schema.minimum) return `${path} must be >= ${schema.minimum}`
  if (schema.maxLength !== undefined && typeof value === 'string' && value.length > schema.maxLength) return `${path} is too long`
  if (Array.isArray(value)) {
    if (schema.maxItems !== undefined && value.length > schema.maxItems) return `${path} has too many items`
    for (const [i, item] of value.entries()) {
      const problem = schema.items ? schemaProblem(item, schema.items, `${path}[${i}]`) : undefined
      if (problem) return problem
    }
  } else if (kind === 'object' && schema.properties) {
    for (const [key, sub] of Object.entries(schema.properties)) {
      const field = (value as Record<string, unknown>)[key]
      if (field === undefined) continue
      const problem = schemaProblem(field, sub, `${path}.${key}`)
      if (problem) return problem
    }
  }
  return undefined
}

interface SyncQuerystring {
  since?: string
  timeout?: string
  full_state?: string
  filter?: string
  set_presence?: PresenceState
}

/**
 * The /sync route over an api process's room services.
 *
 * @example
 * const app = await buildApp(ctx, { plugins: [roomReadRoutes(services), syncRoutes(services)] })
 */
export function syncRoutes(services: RoomServices): FastifyPluginAsync {
  const { tracker, notifier } = services
  return async (app) => {
    const { db } = app.myelin

    const membershipWatch = createMembershipWatch({ db, tracker, log: app.myelin.log })
    const streams = syncStreams(db)
    const accountDataWatch = createPositionWatch({ stream: streams.accountData, log: app.myelin.log })
    const ephemeralWatch = createPositionWatch({ stream: streams.ephemeral, log: app.myelin.log })
    const toDeviceWatch = createPositionWatch({ stream: streams.toDevice, log: app.myelin.log })
    const presenceWatch = createPositionWatch({ stream: streams.presence, log: app.myelin.log })
    const deviceListsWatch = createPositionWatch({ stream: streams.deviceLists, log: app.myelin.log })
    const { presence } = app.myelin
    const roomsChangedAfter = (rooms: readonly string[], after: RoomStreamToken) => notifier.roomsChangedAfter(rooms, after)
    // Each user's unread counts, so that a long-poll evaluates only what it delivers (sync by user keeps a user here).
    const unread = new UnreadCounter()
    /**
     * Waits for news for `userId` after `after`: their rooms or their membership anywhere
     * (`advanced`), their account data, their rooms' receipts and typing, messages to their
     * device, or the presence, devices or keys of themselves or of their rooms' members (`streams`).
     */
    const waitForNews = async (userId: string, deviceId: string | undefined, rooms: readonly string[], after: SyncToken, timeoutMs: number, signal: AbortSignal) => {
      const stop = new AbortController()
      const onAbort = () => stop.abort()
      signal.addEventListener('abort', onAbort, { once: true })
      try {
        return await Promise.race([
          notifier.wait({ rooms: new Set(rooms), after: after.room, timeoutMs, signal: stop.signal }),
          membershipWatch.wait(userId, after.room, timeoutMs, stop.signal),
          accountDataWatch.wait(userId, after.accountData, timeoutMs, stop.signal).then(streamsOutcome),
          ephemeralWatch.wait(rooms, after.ephemeral, timeoutMs, stop.signal).then(streamsOutcome),
          ...(deviceId === undefined ? [] : [toDeviceWatch.wait(toDeviceKey(userId, deviceId), after.toDevice, timeoutMs, stop.signal).then(streamsOutcome)]),
          ...(presence.enabled ? [presenceWatch.wait([userId, ...rooms], after.presence, timeoutMs, stop.signal).then(streamsOutcome)] : []),
          deviceListsWatch.wait([userId, ...rooms], after.deviceLists, timeoutMs, stop.signal).then(streamsOutcome),
        ])
      } finally {
        signal.removeEventListener('abort', onAbort)
        stop.abort()
      }
    }

    // Simplified sliding sync (MSC4186) reads through /sync's reads and waits the same way.
    slidingSyncRoute(app, { tracker, maxTimeoutMs: maxSyncTimeoutMs, waitForNews, roomsChangedAfter, unread })

    clientRoute<{ Querystring: SyncQuerystring }>(app, {
      method: 'GET',
      path: '/sync',
      schema: {
        querystring: {
          type: 'object',
          properties: {
            since: { type: 'string', maxLength: 4000 },
            timeout: { type: 'string', pattern: '^[0-9]{1,12}$' },
            full_state: { type: 'string', enum: ['true', 'false'] },
            filter: { type: 'string', maxLength: maxFilterLength },
            set_presence: { type: 'string', enum: ['offline', 'online', 'unavailable'] },
          },
        },
      },
      handler: async (request, reply) => {
        const { userId, deviceId } = await requireUser(request)
        const query = request.query
        const filter = parseSyncFilter(await filterParam(db, userId, query.filter, filterSchema))
        const timeoutMs = Math.min(Number(query.timeout ?? '0'), maxSyncTimeoutMs)
        const fullState = query.full_state === 'true'
        await presence.syncing(userId, query.set_presence, timeoutMs)
        // The device's key counts as the request starts, read beside its first read: a long-poll
        // woken later answers without waiting for them (the next sync brings newer ones).
        const keyCounts = deviceKeyCounts(db, userId, deviceId)
        keyCounts.catch(() => {})
        const closed = new AbortController()
        reply.raw.on('close', () => {
          if (!reply.raw.writableFinished) closed.abort()
        })

        let since: SyncToken | undefined
        /** The stream positions read for `since`, which the first read goes up to. */
        let positions: StreamPositions | undefined
        if (query.since !== undefined) {
          const parsed = parseSyncToken(query.since)
          const [room, streams] = await Promise.all([tracker.clamp(parsed.room), syncPositions(db)])
          positions = streams
          const atMost = (position: bigint, limit: bigint) => (position < limit ? position : limit)
          since = {
            room,
            accountData: atMost(parsed.accountData, streams.accountData),
            // Tokens of earlier versions: no receipts, typing or presence changes from before
            // now, and every message still waiting for the device (deleted only once seen).
            ephemeral: atMost(parsed.ephemeral ?? streams.ephemeral, streams.ephemeral),
            toDevice: atMost(parsed.toDevice ?? 0n, streams.toDevice),
            presence: atMost(parsed.presence ?? streams.presence, streams.presence),
            deviceLists: atMost(parsed.deviceLists ?? streams.deviceLists, streams.deviceLists),
          }
          if (!(await tracker.waitFor(room, sinceWaitMs))) {
            request.log.warn('sync token not covered by this process in time: empty answer')
            return emptyResponse(serializeSyncToken(since))
          }
        }

        // A read woken by another stream asks for the streams' positions again; one woken by
        // rooms goes up to the same positions as before (a change after them comes with the next sync).
        const read = (joinedEarlier?: readonly string[], known?: StreamPositions) =>
          readSync(db, {
            userId,
            deviceId,
            ...(since && { since }),
            upTo: { room: tracker.currentToken(), ...(known && { streams: known }) },
            fullState,
            filter,
            now: request.server.myelin.clock(),
            presence: presence.enabled,
            roomsChangedAfter,
            ...(joinedEarlier && { joinedEarlier }),
            unread,
          })
        let data = await read(undefined, positions)
        const deadline = Date.now() + timeoutMs
        while (since && data.empty && !fullState && !closed.signal.aborted && deadline > Date.now()) {
          const outcome = await waitForNews(userId, deviceId, data.joinedRooms, data.upTo, deadline - Date.now(), closed.signal)
          if (outcome !== 'advanced' && outcome !== 'streams') break
          data = await read(data.joinedRooms, outcome === 'advanced' ? data.upTo : undefined)
        }
        const counts = await keyCounts
        return {
          ...emptyResponse(serializeSyncToken(data.upTo)),
          account_data: { events: data.accountData },
          to_device: { events: data.toDevice },
          presence: { events: data.presence },
          device_lists: data.deviceLists,
          device_one_time_keys_count: clientKeyCounts(counts.oneTimeKeyCounts),
          device_unused_fallback_key_types: counts.unusedFallbackKeyTypes,
          rooms: data.rooms,
        }
      },
    })
  }
}

/** A position watch's outcome as `waitForNews` tells it. */
function streamsOutcome(outcome: WaitOutcome): 'streams' | WaitOutcome {
  return outcome === 'advanced' ? 'streams' : outcome
}

function emptyResponse(nextBatch: string) {
  return {
    next_batch: nextBatch,
    account_data: { events: [] as unknown[] },
    rooms: { join: {}, invite: {}, leave: {}, knock: {} } as Record<string, unknown>,
    presence: { events: [] },
    to_device: { events: [] },
    device_lists: { changed: [], left: [] },
    device_one_time_keys_count: {},
    device_unused_fallback_key_types: [],
  }
}
