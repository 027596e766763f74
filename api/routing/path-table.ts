/**
 * The seed's path table (Synapse `docs/workers.md`, "Available worker applications") reduced to
 * the three routing decisions Myelin makes for client-server API requests:
 *
 * - `sync`: long-polling reads that are cheaper when all of a user's requests reach the same api
 *   worker (its caches stay warm): `/sync`, `/events`, `/initialSync`, `/rooms/{id}/initialSync`,
 *   and sliding sync (MSC4186), whose connections live in the api worker's memory.
 * - `room-write`: requests that create an event in one room; they go to the room's owner
 *   persister, which persists them without a replication hop: `PUT|POST
 *   /rooms/{id}/send|state|redact…`, `POST /rooms/{id}/join|invite|leave|ban|unban|kick` and
 *   `POST /join|knock/{roomId}` (a room alias cannot be routed by room, so `/join/#alias` is `any`).
 * - `any`: everything else, spread round robin.
 *
 * Prefixes follow the seed: sync paths accept `r0|v3` (`/sync`) or `api/v1|r0|v3` (the others);
 * event-sending paths also accept `unstable`. The room ID is the URL-decoded path segment; a
 * segment that does not decode, or does not start with `!`, makes the request `any` (the worker
 * answers it with the proper Matrix error).
 */
export type Route = { kind: 'sync' } | { kind: 'room-write'; roomId: string } | { kind: 'any' }

const syncPaths = [
  /^\/_matrix\/client\/(?:r0|v3)\/sync$/,
  /^\/_matrix\/client\/unstable\/org\.matrix\.simplified_msc3575\/sync$/,
  /^\/_matrix\/client\/(?:api\/v1|r0|v3)\/events$/,
  /^\/_matrix\/client\/(?:api\/v1|r0|v3)\/initialSync$/,
  /^\/_matrix\/client\/(?:api\/v1|r0|v3)\/rooms\/[^/]+\/initialSync$/,
]

const clientPrefix = String.raw`^\/_matrix\/client\/(?:api\/v1|r0|v3|unstable)`

/** Each pattern captures the encoded room ID (or alias) as group 1. */
const roomWritePaths = [
  new RegExp(`${clientPrefix}\\/rooms\\/([^/]+)\\/(?:send|state|redact)(?:\\/|$)`),
  new RegExp(`${clientPrefix}\\/rooms\\/([^/]+)\\/(?:join|invite|leave|ban|unban|kick)$`),
  new RegExp(`${clientPrefix}\\/(?:join|knock)\\/([^/]+)$`),
]

const writeMethods = new Set(['PUT', 'POST'])

/**
 * Classifies one client request. `path` may carry a query string (it is ignored); methods are
 * case-insensitive. Pure and allocation-light: the router calls it for every request.
 *
 * @example
 * classifyRequest('GET', '/_matrix/client/v3/sync?since=s1') // { kind: 'sync' }
 * classifyRequest('PUT', '/_matrix/client/v3/rooms/%21a%3Ahs.test/send/m.room.message/t1')
 * // { kind: 'room-write', roomId: '!a:hs.test' }
 * classifyRequest('GET', '/_matrix/client/v3/rooms/%21a%3Ahs.test/messages') // { kind: 'any' }
 */
export function classifyRequest(method: string, path: string): Route {
  const query = path.indexOf('?')
  const pathname = query === -1 ? path : path.slice(0, query)
  if (!pathname.startsWith('/_matrix/client/')) return anyRoute
  for (const pattern of syncPaths) {
    if (pattern.test(pathname)) return syncRoute
  }
  if (!writeMethods.has(method.toUpperCase())) return anyRoute
  for (const pattern of roomWritePaths) {
    const encoded = pattern.exec(pathname)?.[1]
    if (encoded === undefined) continue
    const roomId = decodeSegment(encoded)
    return roomId !== undefined && roomId.startsWith('!') ? { kind: 'room-write', roomId } : anyRoute
  }
  return anyRoute
}

const syncRoute: Route = Object.freeze({ kind: 'sync' })
const anyRoute: Route = Object.freeze({ kind: 'any' })

function decodeSegment(segment: string): string | undefined {
  try {
    return decodeURIComponent(segment)
  } catch {
    return undefined
  }
}
