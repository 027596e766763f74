import type { FastifyPluginAsync } from 'fastify'
import { parseEventFilter } from '../../storage/room-reads.js'
import { parseSearchCursor, searchKeys, searchRoomEvents, type SearchKey } from '../../storage/search.js'
import { clientRoute } from '../client-route.js'
import { filterSchema } from '../filter-schema.js'
import { requireUser } from '../require-user.js'
import type { RoomServices } from '../room-services.js'

/**
 * `POST /search` (client-server API "Server Side Search"), category `room_events`, over
 * storage/search.ts: `search_term`, `keys`, `filter` (a RoomEventFilter: rooms, not_rooms,
 * senders, not_senders, types, not_types, contains_url, `limit` = the page size, default 10 and
 * at most 100), `order_by` (`rank`, the default, or `recent`), `event_context` (`before_limit` and
 * `after_limit`, default 5, at most 100; `include_profile`); pages with `?next_batch=`.
 * `groupings` and `include_state` are accepted and not answered (both are optional in answers).
 * Other categories get no answer, as there are none in the spec.
 */

interface SearchBody {
  search_categories: {
    room_events?: {
      search_term: string
      keys?: SearchKey[]
      filter?: Record<string, unknown> & { rooms?: string[]; not_rooms?: string[]; limit?: number }
      order_by?: 'rank' | 'recent'
      event_context?: { before_limit?: number; after_limit?: number; include_profile?: boolean }
      include_state?: boolean
      groupings?: Record<string, unknown>
    }
  }
}

const contextLimit = { type: 'integer', minimum: 0, maximum: 100 } as const

const searchSchema = {
  querystring: { type: 'object', properties: { next_batch: { type: 'string', maxLength: 200 } } },
  body: {
    type: 'object',
    required: ['search_categories'],
    properties: {
      search_categories: {
        type: 'object',
        properties: {
          room_events: {
            type: 'object',
            required: ['search_term'],
            properties: {
              search_term: { type: 'string', maxLength: 4096 },
              keys: { type: 'array', maxItems: 3, items: { type: 'string', enum: searchKeys } },
              filter: filterSchema.properties.room.properties.timeline,
              order_by: { type: 'string', enum: ['rank', 'recent'] },
              event_context: { type: 'object', properties: { before_limit: contextLimit, after_limit: contextLimit, include_profile: { type: 'boolean' } } },
              include_state: { type: 'boolean' },
              groupings: { type: 'object' },
            },
          },
        },
      },
    },
  },
} as const

/** Results per page: Synapse's default, and a cap so a page stays one cheap read. */
const defaultLimit = 10
const maxLimit = 100

export function searchRoutes(services: RoomServices): FastifyPluginAsync {
  const { tracker } = services
  return async (app) => {
    const { db, clock } = app.myelin
    clientRoute<{ Body: SearchBody; Querystring: { next_batch?: string } }>(app, {
      method: 'POST',
      path: '/search',
      schema: searchSchema,
      handler: async (request) => {
        const { userId, deviceId } = await requireUser(request)
        const roomEvents = request.body.search_categories.room_events
        if (roomEvents === undefined) return { search_categories: {} }
        const filter = roomEvents.filter ?? {}
        const context = roomEvents.event_context
        const next = request.query.next_batch
        const answer = await searchRoomEvents(db, {
          viewer: { userId, deviceId },
          term: roomEvents.search_term,
          keys: roomEvents.keys ?? [...searchKeys],
          ...(filter.rooms !== undefined && { rooms: filter.rooms }),
          notRooms: filter.not_rooms ?? [],
          filter: parseEventFilter(filter),
          orderBy: roomEvents.order_by ?? 'rank',
          limit: Math.min(filter.limit === undefined || filter.limit === 0 ? defaultLimit : filter.limit, maxLimit),
          ...(next !== undefined && next !== '' && { next: parseSearchCursor(next) }),
          ...(context !== undefined && { context: { before: context.before_limit ?? 5, after: context.after_limit ?? 5, includeProfile: context.include_profile === true } }),
          upTo: tracker.currentToken(),
          now: clock(),
        })
        return { search_categories: { room_events: answer } }
      },
    })
  }
}
