import type { FastifyInstance } from 'fastify'
import { Gauge } from 'prom-client'
import { clientKeyCounts, deviceKeyCounts } from '../../storage/e2e-keys.js'
import type { JsonObject } from '../../storage/events/redaction.js'
import { directRooms, listedRooms, requiredState, roomMetadata, roomTags, saveConnections, spaceChildren, takeConnection, type ListedRoom, type RoomMetadata, type StatePattern } from '../../storage/sliding-sync.js'
import type { RoomStreamToken } from '../../storage/streams/room-stream-token.js'
import type { StreamTracker } from '../../storage/streams/stream-tracker.js'
import { forEachLimited } from '../../storage/limited.js'
import { defaultTimelineLimit, maxTimelineLimit, parseSyncFilter, parseSyncToken, readSync, serializeSyncToken, syncPositions, type SyncData, type SyncToken } from '../../storage/sync.js'
import { toDeviceForSync } from '../../storage/to-device.js'
import type { UnreadCounter } from '../../storage/unread-counts.js'
import { clientRoute } from '../client-route.js'
import { MatrixError } from '../errors.js'
import { requireUser } from '../require-user.js'
import { SlidingConnections } from '../sliding-connections.js'
import type { WaitOutcome } from '../user-waiters.js'

/**
 * Simplified sliding sync (MSC4186, what Element X and matrix-rust-sdk clients speak):
 * `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync?pos=&timeout=`.
 *
 * - `lists`: each sorts the user's joined, invited and knocked rooms by bump stamp (their latest
 *   message-like event, `storage/sliding-sync.ts` `bumpEventTypes`), newest first, keeps those
 *   passing its `filters` (`is_dm` by `m.direct`, `is_invite`, `is_encrypted`, `room_types`,
 *   `not_room_types`, `spaces` (the `m.space.child` rooms of the joined spaces named), `tags` and
 *   `not_tags` (the user's `m.tag`; `not_tags` wins); others are ignored), and answers its
 *   `count`; the rooms in its `ranges` (inclusive) are sent.
 * - `room_subscriptions`: rooms the user is in, sent whatever the lists say. A subscription lasts
 *   for the connection until `unsubscribe_rooms` names its room (matrix-js-sdk sends each once).
 * - A room is sent with the largest `timeline_limit` and the union of the `required_state` of
 *   the lists and subscriptions it is in (`[type, state_key]`; `*` for any, `$ME`, and `$LAZY`
 *   for the senders of the timeline's events: each sender's member event comes once per
 *   connection, then only its changes).
 * - A room the connection has not sent yet (or sent with another membership, or a configuration
 *   asking for state it was not sent) comes `initial`: its last `timeline_limit` events and the state at their end that
 *   `required_state` asks for (clients take state from `required_state` only); invites come
 *   with `invite_state`. A room asked for a longer timeline than it was sent with (Element X
 *   opening a room, say) comes with `expanded_timeline`: its last `timeline_limit` events, of
 *   which the last `num_live` are news, and only the state changes since the last response.
 *   A room it has sent comes again only with news since the last
 *   response: new events (`num_live`), the state changes asked for (the timeline's included),
 *   unread counts, account data, receipts or typing. A room that leaves the lists is forgotten
 *   and comes `initial` when it is back. A room the user left comes once more, with the leave
 *   in its timeline.
 * - Every room sent carries `bump_stamp`, `joined_count`, `invited_count`, `notification_count`,
 *   `highlight_count`, its `name` and `avatar` (or `heroes` when it has no name) and `is_dm`.
 * - `extensions`: `to_device` (`since`/`next_batch`, messages deleted once a later `since`
 *   acknowledges them), `e2ee` (device list changes, one-time key counts, unused fallback key
 *   types), `account_data` (global, and of the rooms sent), `receipts` and `typing` (of the rooms
 *   sent).
 * - Long-poll: with a `pos` and nothing to say, the request waits up to `timeout` ms for news,
 *   like `/sync` (api/routes/sync.ts). `set_presence` (absent: `online`) marks the user as /sync does.
 * - Connections (`conn_id`, per device) live in the api worker's memory (api/sliding-connections.ts).
 *   A worker that shuts down saves them in the database, and the worker that next sees one of
 *   their positions takes the connection in, so a restart or a change of worker costs clients
 *   nothing. A `pos` no worker knows (its worker crashed, or the connection was idle for 30
 *   minutes) is 400 `M_UNKNOWN_POS`, and the client starts again without one.
 *
 * Timelines are /sync's (storage/sync.ts `readSync`) and the state `requiredState`'s
 * (storage/sliding-sync.ts), all bounded by one token, so no event is skipped or repeated between
 * responses; the room metadata is read from current state.
 */

interface RoomConfig {
  readonly timeline_limit?: number
  readonly required_state?: readonly StatePattern[]
}

interface ListRequest extends RoomConfig {
  readonly ranges?: readonly (readonly [number, number])[]
  readonly filters?: {
    readonly is_dm?: boolean
    readonly is_encrypted?: boolean
    readonly is_invite?: boolean
    readonly room_types?: readonly (string | null)[]
    readonly not_room_types?: readonly (string | null)[]
    readonly spaces?: readonly string[]
    readonly tags?: readonly string[]
    readonly not_tags?: readonly string[]
  }
}

interface ExtensionToggle {
  readonly enabled?: boolean
}

interface SlidingSyncBody {
  readonly conn_id?: string
  readonly lists?: Readonly<Record<string, ListRequest>>
  readonly room_subscriptions?: Readonly<Record<string, RoomConfig>>
  readonly unsubscribe_rooms?: readonly string[]
  readonly extensions?: {
    readonly to_device?: ExtensionToggle & { readonly since?: string; readonly limit?: number }
    readonly e2ee?: ExtensionToggle
    readonly account_data?: ExtensionToggle
    readonly receipts?: ExtensionToggle
    readonly typing?: ExtensionToggle
  }
}

/** What a connection's client holds after a response. */
interface ConnectionState {
  /** The positions the response went up to: the next response's `since`. */
  readonly token: SyncToken
  /** The rooms it holds, each with how it was sent. */
  readonly sent: ReadonlyMap<string, SentAs>
  readonly listCounts: ReadonlyMap<string, number>
  /** Room subscriptions in force: they last until `unsubscribe_rooms` ends them. */
  readonly subscriptions: ReadonlyMap<string, RoomConfig>
  /** The joined rooms' bump stamps at `token`, for the next response to walk only rooms with news. */
  readonly bumps: ReadonlyMap<string, bigint>
}

/**
 * A connection's positions as saved for another worker (`saveConnections`), and back. The bump
 * stamps of every joined room are left out (a user in 1,000 rooms would make a connection tens
 * of kilobytes): they only spare the next response a walk, which it then does for every room.
 */
const savedState = {
  encode(positions: readonly (readonly [string, ConnectionState])[]): string {
    return JSON.stringify(
      positions.map(([pos, state]) => ({
        pos,
        token: serializeSyncToken(state.token),
        sent: [...state.sent].map(([roomId, as]) => [roomId, as.membership, as.timelineLimit, [...as.requiredState]]),
        listCounts: [...state.listCounts],
        subscriptions: [...state.subscriptions],
      })),
    )
  },
  decode(text: string): [string, ConnectionState][] {
    const saved = JSON.parse(text) as {
      pos: string
      token: string
      sent: [string, string, number, string[]][]
      listCounts: [string, number][]
      subscriptions: [string, RoomConfig][]
    }[]
    return saved.map((p) => [
      p.pos,
      {
        token: parseSyncToken(p.token) as SyncToken,
        sent: new Map(p.sent.map(([roomId, membership, timelineLimit, patterns]) => [roomId, { membership, timelineLimit, requiredState: new Set(patterns) }])),
        listCounts: new Map(p.listCounts),
        subscriptions: new Map(p.subscriptions),
        bumps: new Map(),
      },
    ])
  },
}

const statePatterns = { type: 'array', maxItems: 100, items: { type: 'array', minItems: 2, maxItems: 2, items: { type: 'string', maxLength: 255 } } } as const
const roomConfig = { timeline_limit: { type: 'integer', minimum: 0, maximum: maxTimelineLimit }, required_state: statePatterns } as const
const toggle = { type: 'object', properties: { enabled: { type: 'boolean' } } } as const
const nullableStrings = { type: 'array', maxItems: 50, items: { type: ['string', 'null'], maxLength: 255 } } as const
const strings = { type: 'array', maxItems: 100, items: { type: 'string', maxLength: 255 } } as const
const bodySchema = {
  type: 'object',
  properties: {
    conn_id: { type: 'string', maxLength: 255 },
    lists: {
      type: 'object',
      maxProperties: 100,
      additionalProperties: {
        type: 'object',
        properties: {
          ...roomConfig,
          ranges: { type: 'array', maxItems: 100, items: { type: 'array', minItems: 2, maxItems: 2, items: { type: 'integer', minimum: 0 } } },
          filters: {
            type: 'object',
            properties: {
              is_dm: { type: 'boolean' },
              is_encrypted: { type: 'boolean' },
              is_invite: { type: 'boolean' },
              room_types: nullableStrings,
              not_room_types: nullableStrings,
              spaces: strings,
              tags: strings,
              not_tags: strings,
            },
          },
        },
      },
    },
    room_subscriptions: { type: 'object', maxProperties: 1000, additionalProperties: { type: 'object', properties: roomConfig } },
    unsubscribe_rooms: { type: 'array', maxItems: 1000, items: { type: 'string', maxLength: 255 } },
    extensions: {
      type: 'object',
      properties: {
        to_device: { type: 'object', properties: { enabled: { type: 'boolean' }, since: { type: 'string', pattern: '^[0-9]{1,19}$' }, limit: { type: 'integer', minimum: 1, maximum: 1000 } } },
        e2ee: toggle,
        account_data: toggle,
        receipts: toggle,
        typing: toggle,
      },
    },
  },
} as const


export interface SlidingSyncDeps {
  readonly tracker: StreamTracker
  /** Longest long-poll a client may ask for (/sync's). */
  readonly maxTimeoutMs: number
  /**
   * /sync's memory of unread counts (api/routes/sync.ts): it checks each room's remembered
   * position against the read's `since`, so connections and /sync of one user can share it.
   */
  readonly unread: UnreadCounter
  /** Which of `rooms` may have events after `after`, from the notifier's memory (api/routes/sync.ts); undefined: unknown. */
  readonly roomsChangedAfter: (rooms: readonly string[], after: RoomStreamToken) => ReadonlySet<string> | undefined
  /** /sync's wait for news for a user (api/routes/sync.ts). */
  readonly waitForNews: (userId: string, deviceId: string | undefined, rooms: readonly string[], after: SyncToken, timeoutMs: number, signal: AbortSignal) => Promise<WaitOutcome | 'streams'>
}

/** Registers the sliding sync endpoint on `app` (from api/routes/sync.ts, which owns the waits). */
export function slidingSyncRoute(app: FastifyInstance, deps: SlidingSyncDeps): void {
  const { db, clock, metrics, log } = app.myelin
  const connections = new SlidingConnections<ConnectionState>(undefined, undefined, clock)
  // A position this worker does not know may be of a connection another worker saved when it
  // shut down: the first request for it takes it from the database, the others wait for that.
  const taking = new Map<string, Promise<void>>()
  const lookup = async (key: string, pos: string | undefined) => {
    const found = connections.lookup(key, pos)
    if (found !== 'unknown') return found
    let take = taking.get(key)
    if (take === undefined) {
      take = takeConnection(db, key, clock() - connections.idleMs)
        .then((saved) => {
          if (saved === undefined) return
          try {
            connections.adopt(key, savedState.decode(saved.state), saved.touchedTs)
          } catch (err) {
            log.warn({ err }, 'a saved sliding sync connection could not be read: its client starts afresh')
          }
        })
        .finally(() => taking.delete(key))
      taking.set(key, take)
    }
    await take
    return connections.lookup(key, pos)
  }
  // On shutdown, after the last request is answered: a failure costs clients a fresh start, not the shutdown.
  app.addHook('onClose', async () => {
    const held = connections.entries()
    try {
      await saveConnections(db, held.map((c) => ({ key: c.key, state: savedState.encode(c.positions), touchedTs: c.touched })), clock() - connections.idleMs)
      if (held.length > 0) log.info({ connections: held.length }, 'sliding sync connections saved')
    } catch (err) {
      log.warn({ err, connections: held.length }, 'could not save sliding sync connections: their clients will start afresh')
    }
  })
  if (metrics !== undefined && metrics.getSingleMetric('myelin_sliding_sync_connections') === undefined) {
    new Gauge({
      name: 'myelin_sliding_sync_connections',
      help: 'Sliding sync connections this process remembers',
      registers: [metrics],
      collect() {
        this.set(connections.size)
      },
    })
  }

  clientRoute<{ Body: SlidingSyncBody; Querystring: { pos?: string; timeout?: string; set_presence?: 'offline' | 'online' | 'unavailable' } }>(app, {
    method: 'POST',
    path: '/sync',
    versions: ['unstable/org.matrix.simplified_msc3575'],
    schema: {
      body: bodySchema,
      querystring: {
        type: 'object',
        properties: {
          pos: { type: 'string', maxLength: 100 },
          timeout: { type: 'string', pattern: '^[0-9]{1,12}$' },
          set_presence: { type: 'string', enum: ['offline', 'online', 'unavailable'] },
        },
      },
    },
    handler: async (request, reply) => {
      const { userId, deviceId } = await requireUser(request)
      const body = request.body
      const key = `${userId}|${deviceId ?? ''}|${body.conn_id ?? ''}`
      const previous = await lookup(key, request.query.pos)
      if (previous === 'unknown') throw new MatrixError(400, 'M_UNKNOWN_POS', 'Unknown position: start the connection again without pos')
      const from = previous === 'fresh' ? undefined : previous
      const timeoutMs = Math.min(Number(request.query.timeout ?? '0'), deps.maxTimeoutMs)
      // As /sync: a syncing client marks its user online (or idle with `unavailable`).
      await app.myelin.presence.syncing(userId, request.query.set_presence, timeoutMs)
      const closed = new AbortController()
      reply.raw.on('close', () => {
        if (!reply.raw.writableFinished) closed.abort()
      })

      const respond = (upTo: SyncToken) => slidingResponse({ ...deps, db, now: clock() }, { userId, deviceId, body, from, upTo })
      const positions = async (): Promise<SyncToken> => {
        const streams = await syncPositions(db)
        return { room: deps.tracker.currentToken(), ...streams }
      }
      let answer = await respond(await positions())
      const deadline = Date.now() + timeoutMs
      while (from !== undefined && answer.empty && !closed.signal.aborted && deadline > Date.now()) {
        const outcome = await deps.waitForNews(userId, deviceId, answer.joinedRooms, answer.state.token, deadline - Date.now(), closed.signal)
        if (outcome !== 'advanced' && outcome !== 'streams') break
        answer = await respond(await positions())
      }
      const pos = connections.store(key, request.query.pos, answer.state)
      return { pos, ...answer.body }
    },
  })
}

interface Answer {
  readonly body: { lists: Record<string, { count: number }>; rooms: Record<string, JsonObject>; extensions: JsonObject }
  readonly state: ConnectionState
  readonly empty: boolean
  readonly joinedRooms: string[]
}

/** How a room was sent: the membership, and the most timeline and state it was sent with. */
interface SentAs {
  readonly membership: string
  readonly timelineLimit: number
  /** `type\u0000state_key` of each `required_state` pattern. */
  readonly requiredState: ReadonlySet<string>
  /**
   * The members whose member event it was sent for `$LAZY` (timeline senders); left out of a
   * saved connection, so that after a take they are sent once more.
   */
  readonly lazyMembers?: ReadonlySet<string>
}

/** Most lazy members remembered per room; beyond it, the oldest are forgotten (and resent when they speak). */
const maxLazyMembers = 1_000

function sentAs(membership: string, config: { timelineLimit: number; requiredState: readonly StatePattern[] }): SentAs {
  return { membership, timelineLimit: config.timelineLimit, requiredState: new Set(config.requiredState.map((p) => p.join('\u0000'))) }
}

/**
 * How a room the client holds as `held` is sent as `now`: `afresh` when its membership changed
 * or it is asked for state it was not sent; `expanded` when only its timeline grew (the last
 * `timeline_limit` events again, the state by its changes); else by its `news`. A room whose
 * configuration only shrank (it left a list with a longer timeline, or a subscription ended) is
 * not resent, and keeps what it was sent with, so growing back needs nothing either.
 */
type SendMode = 'afresh' | 'expanded' | 'news'

function sendMode(held: SentAs | undefined, now: SentAs): SendMode {
  if (held === undefined || held.membership !== now.membership || [...now.requiredState].some((p) => !held.requiredState.has(p))) return 'afresh'
  // Invites and knocks carry stripped state, not a timeline to expand.
  return now.timelineLimit > held.timelineLimit && now.membership !== 'invite' && now.membership !== 'knock' ? 'expanded' : 'news'
}

/** One /sync read of a response: rooms with the same timeline limit, read afresh or by their news. */
interface ReadGroup {
  readonly afresh: boolean
  readonly limit: number
  readonly rooms: Set<string>
}

/** One response of a connection, from its state `from` (undefined: a fresh connection) up to `upTo`. */
async function slidingResponse(
  ctx: { db: FastifyInstance['myelin']['db']; now: number; roomsChangedAfter: SlidingSyncDeps['roomsChangedAfter']; unread: UnreadCounter },
  q: { userId: string; deviceId: string | undefined; body: SlidingSyncBody; from: ConnectionState | undefined; upTo: SyncToken },
): Promise<Answer> {
  const { db } = ctx
  const { userId, deviceId, body, from, upTo } = q
  const lists = body.lists ?? {}
  // The extensions' own reads (to-device messages, key counts) run beside the rooms'.
  const ext = body.extensions ?? {}
  const toDevice =
    ext.to_device?.enabled === true && deviceId !== undefined
      ? toDeviceForSync(db, { userId, deviceId, after: ext.to_device.since !== undefined ? BigInt(ext.to_device.since) : 0n, upTo: upTo.toDevice, ...(ext.to_device.limit !== undefined && { limit: ext.to_device.limit }) })
      : undefined
  const keyCounts = ext.e2ee?.enabled === true && deviceId !== undefined ? deviceKeyCounts(db, userId, deviceId) : undefined
  // Awaited below; a failure before then fails the response, not the process.
  toDevice?.catch(() => {})
  keyCounts?.catch(() => {})
  // The bumps of rooms without news since the last response are the ones it saw.
  const known = from && { bumps: from.bumps, changed: (roomIds: readonly string[]) => ctx.roomsChangedAfter(roomIds, from.token.room) }
  const [rooms, dms] = await Promise.all([listedRooms(db, userId, upTo.room, known), directRooms(db, userId)])
  const filters = Object.values(lists).map((l) => l.filters ?? {})
  const needsMetadata = filters.some((f) => f.is_encrypted !== undefined || f.room_types !== undefined || f.not_room_types !== undefined)
  const spaceIds = [...new Set(filters.flatMap((f) => f.spaces ?? []))]
  const joined = rooms.filter((r) => r.membership === 'join')
  const [allMetadata, tags, children] = await Promise.all([
    needsMetadata ? roomMetadata(db, rooms.map((r) => r.roomId), userId) : undefined,
    filters.some((f) => f.tags !== undefined || f.not_tags !== undefined) ? roomTags(db, userId) : new Map<string, ReadonlySet<string>>(),
    spaceChildren(db, spaceIds, new Set(joined.map((r) => r.roomId))),
  ])
  const facts = { dms, tags, children }

  // The rooms to send, each with the largest timeline and every state pattern asked of it.
  const configs = new Map<string, { timelineLimit: number; requiredState: StatePattern[] }>()
  const want = (roomId: string, config: RoomConfig) => {
    const known = configs.get(roomId) ?? { timelineLimit: 0, requiredState: [] }
    known.timelineLimit = Math.max(known.timelineLimit, config.timeline_limit ?? defaultTimelineLimit)
    for (const pattern of config.required_state ?? []) if (!known.requiredState.some((p) => p[0] === pattern[0] && p[1] === pattern[1])) known.requiredState.push(pattern)
    configs.set(roomId, known)
  }
  const listCounts = new Map<string, number>()
  for (const [name, list] of Object.entries(lists)) {
    const passing = rooms.filter((room) => passesFilters(room, list.filters ?? {}, facts, allMetadata?.get(room.roomId)))
    listCounts.set(name, passing.length)
    for (const [start, end] of list.ranges ?? []) for (const room of passing.slice(start, end + 1)) want(room.roomId, list)
  }
  const byId = new Map(rooms.map((room) => [room.roomId, room]))
  const subscriptions = new Map(from?.subscriptions)
  for (const roomId of body.unsubscribe_rooms ?? []) subscriptions.delete(roomId)
  for (const [roomId, config] of Object.entries(body.room_subscriptions ?? {})) subscriptions.set(roomId, config)
  for (const [roomId, config] of subscriptions) if (byId.has(roomId)) want(roomId, config)

  // Rooms the client holds as they are come with their news; others afresh. Rooms it holds that
  // the user left come once more (their leave).
  const sent = new Map<string, SentAs>()
  const groups = new Map<string, ReadGroup>()
  const group = (afresh: boolean, limit: number, roomId: string) => {
    const id = JSON.stringify([afresh, limit])
    const g = groups.get(id) ?? { afresh, limit, rooms: new Set<string>() }
    g.rooms.add(roomId)
    groups.set(id, g)
  }
  // An expanded room is read both ways: afresh for its timeline, by its news for the rest.
  const expanded = new Set<string>()
  for (const [roomId, config] of configs) {
    const held = from?.sent.get(roomId)
    const now = sentAs(byId.get(roomId)!.membership, config)
    const mode = sendMode(held, now)
    sent.set(roomId, mode === 'afresh' ? now : mode === 'expanded' ? { ...held!, timelineLimit: now.timelineLimit } : held!)
    if (mode === 'expanded') expanded.add(roomId)
    if (mode !== 'news') group(true, config.timelineLimit, roomId)
    if (mode !== 'afresh') group(false, config.timelineLimit, roomId)
  }
  const left = from === undefined ? [] : [...from.sent.keys()].filter((roomId) => !byId.has(roomId))
  for (const roomId of left) group(false, 1, roomId)

  // One /sync read per group; the incremental ones also carry the account data and device list
  // changes since the last response (a fresh connection gets all account data from an initial one).
  const readGroup = (g: ReadGroup) =>
    readSync(db, {
      userId,
      ...(deviceId !== undefined && { deviceId }),
      ...(!g.afresh && from !== undefined && { since: from.token }),
      upTo: { room: upTo.room, streams: upTo },
      fullState: false,
      filter: {
        // Sliding sync's state is the state at the end of the timeline, read below.
        ...parseSyncFilter({ room: { timeline: { limit: g.limit }, state: { types: [] } } }),
        rooms: g.rooms,
      },
      now: ctx.now,
      presence: false,
      toDevice: false,
      roomsChangedAfter: ctx.roomsChangedAfter,
      unread: ctx.unread,
    })
  if (from !== undefined && ![...groups.values()].some((g) => !g.afresh)) groups.set('news', { afresh: false, limit: 0, rooms: new Set() })
  if (from === undefined && groups.size === 0) groups.set('data', { afresh: true, limit: 0, rooms: new Set() })
  // The rooms' metadata is read alongside their timelines.
  const [reads, metadata] = await Promise.all([
    Promise.all([...groups.values()].map(async (g) => ({ g, data: await readGroup(g) }))),
    roomMetadata(db, [...configs.keys(), ...left], userId),
  ])
  const global = reads.find((r) => !r.g.afresh || from === undefined)?.data
  type Entry = NonNullable<ReturnType<typeof roomEntry>>
  const entries: { roomId: string; initial: boolean; entry: Entry }[] = []
  const news = new Map<string, Entry>()
  const timelines = new Map<string, Entry>()
  for (const { g, data } of reads) {
    for (const roomId of g.rooms) {
      const entry = roomEntry(data, roomId, g.afresh, byId.get(roomId), metadata.get(roomId), dms.has(roomId))
      if (entry === undefined) continue
      if (!expanded.has(roomId)) entries.push({ roomId, initial: g.afresh, entry })
      else (g.afresh ? timelines : news).set(roomId, entry)
    }
  }
  for (const [roomId, entry] of timelines) entries.push({ roomId, initial: false, entry: expandedEntry(entry, news.get(roomId)) })
  // The state each room's client needs: all it asks for when the room comes afresh, else the
  // changes since the last response (the timeline's state events included: clients do not
  // apply them). Joined rooms only: invites carry their stripped state.
  const viewer = { userId, ...(deviceId !== undefined && { deviceId }) }
  await forEachLimited(entries, 8, async ({ roomId, initial, entry }) => {
    if (entry.room['invite_state'] !== undefined || entry.room['knock_state'] !== undefined || byId.get(roomId)?.membership !== 'join') return
    const patterns = configs.get(roomId)?.requiredState ?? []
    const as = sent.get(roomId)
    const heldLazy = initial ? undefined : as?.lazyMembers
    entry.room['required_state'] = await requiredState(db, roomId, {
      patterns,
      userId,
      lazySenders: entry.senders,
      ...(heldLazy && { heldLazy }),
      upTo: upTo.room,
      ...(!initial && from !== undefined && { since: from.token.room }),
      viewer,
      now: ctx.now,
    })
    if (as !== undefined && patterns.some((p) => p[1] === '$LAZY') && entry.senders.size > 0) {
      // The latest senders last, so that the cap forgets those who spoke longest ago.
      const members = [...[...(heldLazy ?? [])].filter((user) => !entry.senders.has(user)), ...entry.senders]
      sent.set(roomId, { ...as, lazyMembers: new Set(members.slice(-maxLazyMembers)) })
    }
  })
  const out: Record<string, JsonObject> = {}
  const roomData: Record<string, JsonObject[]> = {}
  const receipts: Record<string, JsonObject> = {}
  const typing: Record<string, JsonObject> = {}
  for (const { roomId, entry } of entries) {
    out[roomId] = entry.room
    if (entry.accountData.length > 0) roomData[roomId] = entry.accountData
    for (const event of entry.ephemeral) {
      if (event['type'] === 'm.receipt') receipts[roomId] = event
      if (event['type'] === 'm.typing') typing[roomId] = event
    }
  }

  const extensions: JsonObject = {}
  let extensionNews = 0
  if (toDevice !== undefined) {
    const messages = await toDevice
    extensions['to_device'] = { next_batch: String(messages.upTo), events: messages.events }
    extensionNews += messages.events.length
  }
  if (ext.e2ee?.enabled === true) {
    const deviceLists = global?.deviceLists ?? { changed: [], left: [] }
    const counts = (await keyCounts) ?? { oneTimeKeyCounts: {}, unusedFallbackKeyTypes: [] }
    extensions['e2ee'] = {
      device_lists: deviceLists,
      device_one_time_keys_count: clientKeyCounts(counts.oneTimeKeyCounts),
      device_unused_fallback_key_types: counts.unusedFallbackKeyTypes,
    }
    extensionNews += deviceLists.changed.length + deviceLists.left.length
  }
  if (ext.account_data?.enabled === true) {
    const globalData = global?.accountData ?? []
    extensions['account_data'] = { global: globalData, rooms: roomData }
    extensionNews += globalData.length + Object.keys(roomData).length
  }
  if (ext.receipts?.enabled === true) {
    extensions['receipts'] = { rooms: receipts }
    extensionNews += Object.keys(receipts).length
  }
  if (ext.typing?.enabled === true) {
    extensions['typing'] = { rooms: typing }
    extensionNews += Object.keys(typing).length
  }

  const listsOut = Object.fromEntries([...listCounts].map(([name, count]) => [name, { count }]))
  const listsMoved = from === undefined || [...listCounts].some(([name, count]) => from.listCounts.get(name) !== count) || listCounts.size !== from.listCounts.size
  // The next response starts where the data read went: to-device messages beyond a limit wait
  // for the extension's own `since`; the rest are the positions read.
  const token: SyncToken = global?.upTo ?? upTo
  return {
    body: { lists: listsOut, rooms: out, extensions },
    state: { token, sent, listCounts, subscriptions, bumps: new Map(joined.map((r) => [r.roomId, r.bumpStamp])) },
    empty: !listsMoved && Object.keys(out).length === 0 && extensionNews === 0,
    joinedRooms: joined.map((r) => r.roomId),
  }
}

/** Whether a room passes a list's filters. */
function passesFilters(
  room: ListedRoom,
  filters: NonNullable<ListRequest['filters']>,
  facts: { dms: ReadonlySet<string>; tags: ReadonlyMap<string, ReadonlySet<string>>; children: ReadonlyMap<string, ReadonlySet<string>> },
  meta: RoomMetadata | undefined,
): boolean {
  if (filters.is_dm !== undefined && facts.dms.has(room.roomId) !== filters.is_dm) return false
  const tags = facts.tags.get(room.roomId)
  if (filters.not_tags !== undefined && filters.not_tags.some((tag) => tags?.has(tag) === true)) return false
  if (filters.tags !== undefined && !filters.tags.some((tag) => tags?.has(tag) === true)) return false
  if (filters.spaces !== undefined && !filters.spaces.some((space) => facts.children.get(space)?.has(room.roomId) === true)) return false
  if (filters.is_invite !== undefined && (room.membership === 'invite') !== filters.is_invite) return false
  if (filters.is_encrypted !== undefined && (meta?.encrypted ?? false) !== filters.is_encrypted) return false
  const type = meta?.roomType ?? null
  if (filters.room_types !== undefined && !filters.room_types.includes(type)) return false
  if (filters.not_room_types !== undefined && filters.not_room_types.includes(type)) return false
  return true
}

/**
 * An expanded room: its timeline read afresh, and what it has new since the last response
 * (undefined: nothing): the news among the timeline's events, account data and receipts.
 */
function expandedEntry(timeline: NonNullable<ReturnType<typeof roomEntry>>, news: NonNullable<ReturnType<typeof roomEntry>> | undefined): NonNullable<ReturnType<typeof roomEntry>> {
  const { initial: _, ...room } = timeline.room
  const events = (room['timeline'] as JsonObject[]).length
  // News read with the same limit: when they filled it (limited), every event sent is news.
  const live = news === undefined ? 0 : news.room['limited'] === true ? events : Math.min(events, (news.room['timeline'] as JsonObject[]).length)
  return { room: { ...room, expanded_timeline: true, num_live: live }, senders: timeline.senders, accountData: news?.accountData ?? [], ephemeral: news?.ephemeral ?? [] }
}

/** A room of the response from its /sync section, or undefined when it has nothing to say. */
function roomEntry(
  data: SyncData,
  roomId: string,
  initial: boolean,
  room: ListedRoom | undefined,
  meta: RoomMetadata | undefined,
  isDm: boolean,
): { room: JsonObject; senders: ReadonlySet<string>; accountData: JsonObject[]; ephemeral: JsonObject[] } | undefined {
  const describe = (): JsonObject => ({
    ...(meta?.name !== undefined && { name: meta.name }),
    ...(meta?.avatar !== undefined && { avatar: meta.avatar }),
    ...(meta !== undefined && meta.heroes.length > 0 && { heroes: meta.heroes }),
    ...(isDm && { is_dm: true }),
    ...(meta !== undefined && { joined_count: meta.joinedCount, invited_count: meta.invitedCount }),
    ...(room !== undefined && { bump_stamp: Number(room.bumpStamp) }),
  })
  const invited = data.rooms.invite[roomId] ?? data.rooms.knock[roomId]
  if (invited !== undefined) {
    const stripped = ((invited['invite_state'] ?? invited['knock_state']) as { events: JsonObject[] }).events
    return { room: { ...describe(), initial: true, [data.rooms.invite[roomId] ? 'invite_state' : 'knock_state']: stripped }, senders: new Set(), accountData: [], ephemeral: [] }
  }
  const section = data.rooms.join[roomId] ?? data.rooms.leave[roomId]
  if (section === undefined) return undefined
  const timeline = section['timeline'] as { events: JsonObject[]; limited: boolean; prev_batch: string }
  const senders = new Set(timeline.events.map((e) => e['sender']).filter((s): s is string => typeof s === 'string'))
  const counts = (section['unread_notifications'] ?? { notification_count: 0, highlight_count: 0 }) as JsonObject
  return {
    room: {
      ...describe(),
      ...(initial && { initial: true }),
      required_state: [],
      timeline: timeline.events,
      prev_batch: timeline.prev_batch,
      limited: timeline.limited,
      num_live: initial ? 0 : timeline.events.length,
      notification_count: counts['notification_count'] ?? 0,
      highlight_count: counts['highlight_count'] ?? 0,
    },
    senders,
    accountData: ((section['account_data'] as { events?: JsonObject[] } | undefined)?.events ?? []),
    ephemeral: ((section['ephemeral'] as { events?: JsonObject[] } | undefined)?.events ?? []),
  }
}

