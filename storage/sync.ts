import { sql, type Kysely } from 'kysely'
import { forEachLimited } from './limited.js'
import { accountDataChanges, type AccountDataEntry } from './account-data.js'
import { StorageError } from './errors.js'
import { streamPositionSql } from './ordered-streams.js'
import { deviceListUpdates, type DeviceListUpdates } from './e2e-keys.js'
import { presenceForSync, type PresenceEvent } from './presence.js'
import { receiptsForSync } from './receipts.js'
import { toDeviceForSync, toDevicePositionSql, type ToDeviceEvent } from './to-device.js'
import { typingForSync } from './typing.js'
import { UnreadCounter, type RoomUnread, type UnreadRoom } from './unread-counts.js'
import type { JsonObject } from './events/redaction.js'
import {
  filterContainsUrl,
  parseEventFilter,
  readPage,
  rowAfter,
  rowBefore,
  rowCoveredBy,
  stateAt,
  stateWhere,
  strippedState,
  toClientEvents,
  tokenAt,
  tokenBefore,
  type EventFilter,
  type EventKey,
  type EventRow,
  type Viewer,
} from './room-reads.js'
import type { Database } from './schema.js'
import { parseRoomStreamToken, type RoomStreamToken } from './streams/room-stream-token.js'

/**
 * The data of one `/sync` (client-server API) between two positions: the rooms the user joined,
 * was invited to or left, with timelines and state, account data, and the joined rooms' read
 * receipts and typing (`ephemeral`: every receipt of a room new to the sync, else those changed
 * since; who is typing, when that changed or the room is new to the sync), and the device's
 * to-device messages.
 *
 * Consistency: every read is bounded by the `upTo` token (room events: the reader's tracker
 * token; account data, receipts and typing: their streams' positions, storage/ordered-streams.ts), and
 * every row below a bound is committed (the tracker guarantees it for events, each stream's lock
 * for account data and the ephemeral stream). So the
 * next sync from `upTo` sees exactly the rows after it: no event is skipped or repeated, even
 * when writers commit out of order. Room state comes from `state_events` bounded by the same
 * token, never from `current_state_events` (which may be ahead of the token).
 *
 * Per room, by the user's membership at `since` and at `upTo` (their latest membership event
 * covered by each token):
 * - joined at `upTo`: if newly joined (not joined at `since`, or left and rejoined in between),
 *   on initial sync and with `full_state`: the last `limit` events and the full state at the
 *   start of the timeline; otherwise the events after `since` (only rooms with something new),
 *   and, when the timeline is `limited`, the state changes between `since` and its start;
 * - invited: `invite_state` (stripped state at the invite) when the invite is new;
 * - knocking: `knock_state` (the same stripped state, at the knock) when the knock is new;
 * - left or banned: when that happened after `since` (initial sync: with `include_leave`), the
 *   timeline up to the leave event.
 * Timelines hide what the user may not see (storage/room-reads.ts visibility rules). Every joined
 * room in the answer carries its `unread_notifications` (storage/unread-counts.ts), counted from
 * the events its section read when it can.
 */

type Db = Kysely<Database>

/** Positions in the single-writer-ordered streams a sync reads besides room events. */
export interface StreamPositions {
  readonly accountData: bigint
  /** Receipts and typing. */
  readonly ephemeral: bigint
  readonly toDevice: bigint
  readonly presence: bigint
  /** Changes of users' devices and end-to-end keys. */
  readonly deviceLists: bigint
}

/** A `/sync` position: the room event stream and the other streams'. */
export interface SyncToken extends StreamPositions {
  readonly room: RoomStreamToken
}

/** A parsed `since`: tokens of earlier versions (two to five parts) lack the newer positions. */
export type ParsedSyncToken = Omit<SyncToken, 'ephemeral' | 'toDevice' | 'presence' | 'deviceLists'> & {
  readonly ephemeral: bigint | undefined
  readonly toDevice: bigint | undefined
  readonly presence: bigint | undefined
  readonly deviceLists: bigint | undefined
}

/**
 * Parses a `next_batch` token:
 * `<room token>_<account data>_<ephemeral>_<to-device>_<presence>_<device lists>` (the room
 * token a live or vector token, which contains no `_`; the others stream positions). The two-
 * to five-part forms of earlier versions are accepted, without the positions they lack.
 *
 * @throws StorageError `ES_INVALID_TOKEN` on any other shape.
 * @example
 * parseSyncToken('m100~1.105_7_3_9_4_2') // { room: m100~1.105, accountData: 7n, ephemeral: 3n, toDevice: 9n, presence: 4n, deviceLists: 2n }
 */
export function parseSyncToken(text: string): ParsedSyncToken {
  const parts = text.split('_')
  if (parts.length < 2 || parts.length > 6) {
    throw new StorageError('ES_INVALID_TOKEN', 'sync token must look like <room token>_<account data>_<ephemeral>_<to-device>_<presence>_<device lists position>')
  }
  const [roomText, accountText, ephemeralText, toDeviceText, presenceText, deviceListsText] = parts as [string, string, ...(string | undefined)[]]
  const room = parseRoomStreamToken(roomText)
  if (room.isHistoric) throw new StorageError('ES_INVALID_TOKEN', 'sync token cannot carry a historic (t) room position')
  const position = (text: string | undefined, what: string) => {
    if (text === undefined) return undefined
    if (!/^(0|[1-9][0-9]{0,17})$/.test(text)) throw new StorageError('ES_INVALID_TOKEN', `${what} position of sync token is not a canonical integer`)
    return BigInt(text)
  }
  return {
    room,
    accountData: position(accountText, 'account data')!,
    ephemeral: position(ephemeralText, 'ephemeral'),
    toDevice: position(toDeviceText, 'to-device'),
    presence: position(presenceText, 'presence'),
    deviceLists: position(deviceListsText, 'device lists'),
  }
}

/**
 * The text form of a sync token (see `parseSyncToken`).
 *
 * @example
 * serializeSyncToken({ room: RoomStreamToken.live(5n), accountData: 2n, ephemeral: 1n, toDevice: 1n, presence: 3n, deviceLists: 1n }) // 's5_2_1_1_3_1'
 */
export function serializeSyncToken(token: SyncToken): string {
  return `${token.room.toString()}_${token.accountData}_${token.ephemeral}_${token.toDevice}_${token.presence}_${token.deviceLists}`
}

/**
 * The positions of the streams besides room events, in one statement.
 *
 * @example
 * await syncPositions(db) // { accountData: 7n, ephemeral: 3n, toDevice: 1n, presence: 5n, deviceLists: 2n }
 */
export async function syncPositions(db: Db): Promise<StreamPositions> {
  const { rows } = await sql<{ account_data: string; ephemeral: string; to_device: string; presence: string; device_lists: string }>`
    SELECT ${streamPositionSql('account_data')} AS account_data, ${streamPositionSql('ephemeral')} AS ephemeral,
           ${toDevicePositionSql} AS to_device, ${streamPositionSql('presence')} AS presence, ${streamPositionSql('device_lists')} AS device_lists`.execute(db)
  const row = rows[0]
  return {
    accountData: BigInt(row?.account_data ?? 1),
    ephemeral: BigInt(row?.ephemeral ?? 1),
    toDevice: BigInt(row?.to_device ?? 1),
    presence: BigInt(row?.presence ?? 1),
    deviceLists: BigInt(row?.device_lists ?? 1),
  }
}

/** The parts of a sync filter (client-server API "Filtering") /sync applies. */
export interface SyncFilter {
  /** Most timeline events per room (default 10, at most 1000). */
  readonly timelineLimit: number
  readonly timeline: EventFilter
  readonly state: EventFilter
  /** Only these rooms (absent: all). */
  readonly rooms?: ReadonlySet<string>
  readonly notRooms: ReadonlySet<string>
  /** Left rooms on initial sync. */
  readonly includeLeave: boolean
  readonly accountData: EventFilter
  readonly roomAccountData: EventFilter
  /** Of the rooms' ephemeral events (`m.typing`, `m.receipt`). */
  readonly ephemeral: EventFilter
  /** Of the `m.presence` events. */
  readonly presence: EventFilter
  /** `room.timeline.unread_thread_notifications`: counts of threads apart from the room's. */
  readonly threadNotifications: boolean
}

/** Default timeline limit, and the largest a filter may ask for. */
export const defaultTimelineLimit = 10
export const maxTimelineLimit = 1000

/**
 * The sync filter of filter JSON (validated against api/filter-schema.ts); `undefined`: defaults.
 *
 * @example
 * parseSyncFilter({ room: { timeline: { limit: 5 } } }).timelineLimit // 5
 */
export function parseSyncFilter(json: Record<string, unknown> | undefined): SyncFilter {
  const room = (json?.['room'] ?? {}) as Record<string, unknown>
  const timeline = (room['timeline'] ?? {}) as Record<string, unknown>
  const limit = typeof timeline['limit'] === 'number' ? Math.min(maxTimelineLimit, Math.max(0, Math.floor(timeline['limit']))) : defaultTimelineLimit
  const list = (value: unknown) => (Array.isArray(value) ? new Set(value.filter((v): v is string => typeof v === 'string')) : undefined)
  const rooms = list(room['rooms'])
  return {
    timelineLimit: limit,
    timeline: parseEventFilter(timeline),
    state: parseEventFilter(room['state']),
    ...(rooms !== undefined && { rooms }),
    notRooms: list(room['not_rooms']) ?? new Set(),
    includeLeave: room['include_leave'] === true,
    accountData: parseEventFilter(json?.['account_data']),
    roomAccountData: parseEventFilter(room['account_data']),
    ephemeral: parseEventFilter(room['ephemeral']),
    presence: parseEventFilter(json?.['presence']),
    threadNotifications: timeline['unread_thread_notifications'] === true,
  }
}

/** What `readSync` reads. */
export interface SyncQuery {
  readonly userId: string
  readonly deviceId?: string
  /** Absent: initial sync. MUST be covered by `upTo`. */
  readonly since?: SyncToken
  /** `streams` absent: their positions, read alongside the memberships. */
  readonly upTo: { readonly room: RoomStreamToken; readonly streams?: StreamPositions }
  readonly fullState: boolean
  readonly filter: SyncFilter
  readonly now: number
  /** Whether the deployment keeps presence (config `presence.enabled`); default true. */
  readonly presence?: boolean
  /** Whether to read the device's to-device messages (default true when `deviceId` is given). */
  readonly toDevice?: boolean
  /**
   * A superset of the rooms among `rooms` with events after `since` up to `upTo.room`, when the
   * caller knows it without a query (api: the notifier's recent advances); undefined: unknown,
   * the rooms are looked up in `events`.
   */
  readonly roomsChangedAfter?: (rooms: readonly string[], since: RoomStreamToken) => ReadonlySet<string> | undefined
  /**
   * Rooms the user was joined to at an earlier read with the same `since` (a woken long-poll's
   * first read). With `roomsChangedAfter`, the few of them with news are read while the
   * memberships are; a room's early section is used only if the memberships show it joined
   * since `since`, otherwise it is dropped unseen.
   */
  readonly joinedEarlier?: readonly string[]
  /** The process's memory of unread counts (absent: every room's counts are read afresh). */
  readonly unread?: UnreadCounter
}

/** The `rooms` and `account_data` parts of a /sync response (the caller adds the rest). */
export interface SyncData {
  readonly rooms: { join: Record<string, JsonObject>; invite: Record<string, JsonObject>; leave: Record<string, JsonObject>; knock: Record<string, JsonObject> }
  readonly accountData: JsonObject[]
  /** The device's to-device messages. */
  readonly toDevice: ToDeviceEvent[]
  /** `m.presence` events of the user and of those sharing a room with them. */
  readonly presence: PresenceEvent[]
  /** Users whose devices changed, and who no longer share a room (incremental syncs). */
  readonly deviceLists: DeviceListUpdates
  /** True when nothing is new (a long-poll may wait). */
  readonly empty: boolean
  /** Rooms the user is joined to at `upTo` (what a long-poll waits on). */
  readonly joinedRooms: string[]
  /** The position read up to: the next sync's `since`. */
  readonly upTo: SyncToken
}

export interface MembershipRow extends EventKey {
  readonly roomId: string
  readonly membership: string
  readonly eventId: string
  readonly writerId: number | null
}

/** Types in an invite's or a knock's stripped state (client-server API recommendation), plus the membership event itself. */
const strippedTypes = new Set(['m.room.create', 'm.room.join_rules', 'm.room.name', 'm.room.avatar', 'm.room.canonical_alias', 'm.room.encryption', 'm.room.topic'])

/**
 * The user's sync data between `since` and `upTo` (rules in the module comment).
 *
 * Round trips: the memberships and the account data position together (the position is
 * skipped when the caller knows it); the rooms with new events (none when `roomsChangedAfter`
 * knows them); then the account data changes (none to read when its position did not move)
 * alongside the rooms' sections, a few rooms at a time. A section is one round trip (its
 * events with their redactions and the room's visibility, `readPage`), a second only when it
 * needs the state or its page holds the viewer's own events or state changes. A room with
 * nothing new but account data is read after those. A woken long-poll (`joinedEarlier`) reads
 * the sections of up to `roomConcurrency` rooms with news alongside the memberships: its whole
 * read is then usually one round trip.
 *
 * @example
 * const data = await readSync(db, { userId, deviceId, upTo: { room: tracker.currentToken() }, fullState: false, filter: parseSyncFilter(undefined), now: Date.now() })
 * Object.keys(data.rooms.join) // ['!a:hs']
 */
export async function readSync(db: Db, q: SyncQuery): Promise<SyncData> {
  const viewer: Viewer = { userId: q.userId, ...(q.deviceId !== undefined && { deviceId: q.deviceId }) }
  const since = q.since
  const wanted = (roomId: string) => (q.filter.rooms === undefined || q.filter.rooms.has(roomId)) && !q.filter.notRooms.has(roomId)
  // A section reads only `upTo.room` of the bounds, so it may start before the account data position is known.
  const reader = new RoomSyncReader(db, q, viewer)
  const early = readEarlySections(reader, q, wanted)
  const [memberships, streams] = await Promise.all([membershipRows(db, q.userId, q.upTo.room), q.upTo.streams ?? syncPositions(db)])
  const atUpTo = latestPerRoom(memberships)
  const atSince = since ? latestPerRoom(memberships.filter((m) => covers(since.room, m))) : new Map<string, MembershipRow>()
  const changed = new Map<string, MembershipRow[]>()
  for (const m of memberships) {
    if (since && covers(since.room, m)) continue
    const list = changed.get(m.roomId)
    if (list) list.push(m)
    else changed.set(m.roomId, [m])
  }

  const joinedRooms = [...atUpTo.values()].filter((m) => m.membership === 'join').map((m) => m.roomId)
  const join: Record<string, JsonObject> = {}
  const invite: Record<string, JsonObject> = {}
  const knock: Record<string, JsonObject> = {}
  const leave: Record<string, JsonObject> = {}

  const incrementalRooms: string[] = []
  const fullRooms: string[] = []
  for (const roomId of joinedRooms) {
    if (!wanted(roomId)) continue
    const newlyJoined = !since || atSince.get(roomId)?.membership !== 'join' || (changed.get(roomId) ?? []).some((m) => m.membership !== 'join')
    if (newlyJoined) fullRooms.push(roomId)
    else incrementalRooms.push(roomId)
  }
  let active: ReadonlySet<string> = new Set<string>()
  if (since && incrementalRooms.length > 0) {
    active = q.roomsChangedAfter?.(incrementalRooms, since.room) ?? (await roomsWithEvents(db, incrementalRooms, since.room, q.upTo.room))
  }
  // The rooms' events are read while the account data is: only a room with nothing new but
  // its account data waits for it. An incremental room read early is taken as it is (its
  // section depends only on `since` and `upTo.room`).
  const sections = new Map<string, JsonObject>()
  const readSections = (rooms: readonly (readonly [string, SyncToken | undefined])[]) =>
    forEachLimited(rooms, roomConcurrency, async ([roomId, from]) => {
      sections.set(roomId, await ((from !== undefined ? early.get(roomId) : undefined) ?? reader.joinedSection(roomId, from)))
    })
  const withEvents = q.fullState ? incrementalRooms : incrementalRooms.filter((roomId) => active.has(roomId))
  const ephemeralRooms = { everything: fullRooms, changedOnly: incrementalRooms, after: since?.ephemeral, upTo: streams.ephemeral }
  const [accountData, receipts, typing, deviceMessages, presence] = await Promise.all([
    accountDataChanges(db, q.userId, { ...(since && { after: since.accountData }), upTo: streams.accountData }),
    receiptsForSync(db, q.userId, ephemeralRooms),
    typingForSync(db, { ...ephemeralRooms, now: q.now }),
    // A sync delivering only part of the device's messages goes up to the last one delivered.
    q.deviceId === undefined || q.toDevice === false
      ? { events: [], upTo: streams.toDevice }
      : toDeviceForSync(db, { userId: q.userId, deviceId: q.deviceId, after: since?.toDevice ?? 0n, upTo: streams.toDevice }),
    q.presence === false ? [] : presenceForSync(db, q.userId, { after: since?.presence, upTo: streams.presence, now: q.now }),
    readSections([...fullRooms.map((roomId) => [roomId, undefined] as const), ...withEvents.map((roomId) => [roomId, since] as const)]),
  ])
  const roomAccountData = (roomId: string) => filterEntries(accountData.rooms.get(roomId) ?? [], q.filter.roomAccountData)
  const ephemeral = (roomId: string) => {
    const userIds = typing.get(roomId)
    const content = receipts.get(roomId)
    const events = [...(userIds ? [{ type: 'm.typing', content: { user_ids: userIds } }] : []), ...(content ? [{ type: 'm.receipt', content }] : [])]
    return events.length === 0 ? [] : filterEntries(events, q.filter.ephemeral)
  }
  // A room with nothing new but its account data, receipts or typing is read after the others.
  const onlyDataNews = incrementalRooms.filter((roomId) => !sections.has(roomId) && (roomAccountData(roomId).length > 0 || ephemeral(roomId).length > 0))
  await readSections(onlyDataNews.map((roomId) => [roomId, since] as const))
  const addJoined = (roomId: string, section: JsonObject, roomData: JsonObject[], roomEphemeral: JsonObject[]) => {
    join[roomId] = { ...section, account_data: { events: roomData }, ephemeral: { events: roomEphemeral }, summary: {} }
  }
  for (const roomId of fullRooms) addJoined(roomId, sections.get(roomId)!, roomAccountData(roomId), ephemeral(roomId))
  for (const roomId of incrementalRooms) {
    const section = sections.get(roomId)
    const roomData = roomAccountData(roomId)
    const roomEphemeral = ephemeral(roomId)
    // Nothing to say (events the filter or visibility hides, or a room the hint over-reported).
    if (section === undefined || (!q.fullState && roomData.length === 0 && roomEphemeral.length === 0 && isEmptySection(section))) continue
    addJoined(roomId, section, roomData, roomEphemeral)
  }

  const ownReceipt = (roomId: string) => Object.values(receipts.get(roomId) ?? {}).some((byType) => Object.values(byType).some((byUser) => Object.hasOwn(byUser, q.userId)))
  const unreadRooms: UnreadRoom[] = Object.keys(join).map((roomId) => ({
    roomId,
    membershipAt: atUpTo.get(roomId)!.streamOrdering,
    newEvents: reader.newEvents(roomId),
    ownReceiptMoved: ownReceipt(roomId),
  }))
  const unread = await (q.unread ?? new UnreadCounter()).count(db, {
    userId: q.userId,
    ...(since && { since: { room: since.room, receipts: since.ephemeral, accountData: since.accountData } }),
    upTo: { room: q.upTo.room, receipts: streams.ephemeral, accountData: streams.accountData },
    rulesChanged: accountData.global.some((entry) => entry.type === 'm.push_rules'),
    rooms: unreadRooms,
    quietRooms: incrementalRooms.filter((roomId) => join[roomId] === undefined && !active.has(roomId) && !ownReceipt(roomId)),
  })
  for (const [roomId, counts] of unread) join[roomId] = { ...join[roomId], ...unreadFields(counts, q.filter.threadNotifications) }

  for (const m of atUpTo.values()) {
    if (!wanted(m.roomId)) continue
    if ((m.membership === 'invite' || m.membership === 'knock') && (!since || changed.has(m.roomId))) {
      const state = await stateAt(db, m.roomId, m)
      const stripped = strippedState(state.filter((row) => strippedTypes.has(row.type) || (row.type === 'm.room.member' && row.stateKey === q.userId)))
      if (m.membership === 'invite') invite[m.roomId] = { invite_state: { events: stripped } }
      else knock[m.roomId] = { knock_state: { events: stripped } }
    }
    if (m.membership === 'leave' || m.membership === 'ban') {
      const before = atSince.get(m.roomId)?.membership
      const changes = changed.get(m.roomId) ?? []
      const out = (membership: string | undefined) => membership === 'leave' || membership === 'ban'
      const newLeave = since ? changes.length > 0 && (!out(before) || changes.some((c) => !out(c.membership))) : q.filter.includeLeave
      if (!newLeave) continue
      const incremental = since && atSince.get(m.roomId)?.membership === 'join' ? since : undefined
      leave[m.roomId] = await reader.leftRoom(m.roomId, incremental, m)
    }
  }

  const globalAccountData = filterEntries(accountData.global, q.filter.accountData)
  // Device lists: read only when something can have changed them (most woken syncs read
  // nothing more): a key change, the user's own membership, or a member event in the sections.
  const noDeviceListNews = { changed: [], left: [] }
  const deviceLists =
    since === undefined || !(since.deviceLists < streams.deviceLists || changed.size > 0 || membersMayHaveChanged(q.filter, [...sections.values()]))
      ? noDeviceListNews
      : await deviceListUpdates(db, q.userId, {
          keysAfter: since.deviceLists,
          keysUpTo: streams.deviceLists,
          roomsSince: since.room.stream,
          // Rooms with news, and those the user's own membership changed in (joined, left).
          rooms: [...new Set([...withEvents, ...changed.keys()])],
        })

  const presenceFilter = q.filter.presence
  const presenceEvents = presence.filter(
    (e) =>
      typeAllowed(presenceFilter, e.type) &&
      (presenceFilter.senders === undefined || presenceFilter.senders.includes(e.sender)) &&
      !presenceFilter.notSenders.includes(e.sender),
  )
  const upTo: SyncToken = {
    room: q.upTo.room,
    accountData: streams.accountData,
    ephemeral: streams.ephemeral,
    toDevice: deviceMessages.upTo,
    presence: streams.presence,
    deviceLists: streams.deviceLists,
  }
  const news = [join, invite, leave, knock].reduce((n, rooms) => n + Object.keys(rooms).length, 0)
  const empty = news + globalAccountData.length + deviceMessages.events.length + presenceEvents.length + deviceLists.changed.length + deviceLists.left.length === 0
  return {
    rooms: { join, invite, leave, knock },
    accountData: globalAccountData,
    toDevice: deviceMessages.events,
    presence: presenceEvents,
    deviceLists,
    empty,
    joinedRooms,
    upTo,
  }
}

/**
 * Whether room members may have joined or left in what a sync read: a member event in a
 * section's timeline or state, or a filter that could hide them (then the sections cannot tell).
 */
function membersMayHaveChanged(filter: SyncFilter, sections: readonly JsonObject[]): boolean {
  const mayHide = (f: EventFilter) =>
    !typeAllowed(f, 'm.room.member') ||
    f.senders !== undefined ||
    f.notSenders.length > 0 ||
    f.containsUrl !== undefined
  if (filter.timelineLimit === 0 || mayHide(filter.timeline) || mayHide(filter.state)) return true
  return sections.some((section) => {
    const { timeline, state } = section as { timeline: { events: { type?: unknown }[] }; state: { events: { type?: unknown }[] } }
    return [...timeline.events, ...state.events].some((e) => e.type === 'm.room.member')
  })
}

/** Rooms whose sections one sync reads at once (each holds a pooled connection per query). */
const roomConcurrency = 4

/**
 * The incremental sections `readSync` starts before the memberships answer: the rooms of
 * `q.joinedEarlier` (wanted by the filter) that `q.roomsChangedAfter` says have news, when
 * there are at most `roomConcurrency` of them. None for an initial or full-state sync, or when
 * the news is unknown. A section not used is dropped, its failure with it.
 */
function readEarlySections(reader: RoomSyncReader, q: SyncQuery, wanted: (roomId: string) => boolean): ReadonlyMap<string, Promise<JsonObject>> {
  const early = new Map<string, Promise<JsonObject>>()
  const { since, joinedEarlier, roomsChangedAfter } = q
  if (since === undefined || q.fullState || joinedEarlier === undefined || roomsChangedAfter === undefined) return early
  const candidates = joinedEarlier.filter(wanted)
  const changed = candidates.length === 0 ? undefined : roomsChangedAfter(candidates, since.room)
  if (changed === undefined || changed.size > roomConcurrency) return early
  for (const roomId of changed) {
    const section = reader.joinedSection(roomId, since)
    section.catch(() => {})
    early.set(roomId, section)
  }
  return early
}

function isEmptySection(section: JsonObject): boolean {
  const { timeline, state } = section as { timeline: { events: unknown[] }; state: { events: unknown[] } }
  return timeline.events.length === 0 && state.events.length === 0
}

/**
 * True when `userId` has a membership event after `after` and covered by `upTo` (a long-poll
 * woken by any room checks this before reading everything).
 *
 * @example
 * if (await membershipChanged(db, userId, waitedFrom, tracker.currentToken())) reread()
 */
export async function membershipChanged(db: Db, userId: string, after: RoomStreamToken, upTo: RoomStreamToken): Promise<boolean> {
  const row = await db
    .selectFrom('room_memberships as m')
    .innerJoin('events as e', 'e.event_id', 'm.event_id')
    .leftJoin('instances as i', 'i.instance_name', 'e.instance_name')
    .select('m.event_id')
    .where('m.user_id', '=', userId)
    .where(rowAfter(after))
    .where(rowCoveredBy(upTo))
    .limit(1)
    .executeTakeFirst()
  return row !== undefined
}

/**
 * The users whose membership changed in any room after `after` and up to `upTo`: one scan of the
 * events in that range (the stream ordering index), however many syncs wait.
 *
 * @example
 * await membershipChangesBetween(db, before, tracker.currentToken()) // Set { '@bob:hs' }
 */
export async function membershipChangesBetween(db: Db, after: RoomStreamToken, upTo: RoomStreamToken): Promise<Set<string>> {
  const rows = await db
    .selectFrom('events as e')
    .innerJoin('room_memberships as m', 'm.event_id', 'e.event_id')
    .leftJoin('instances as i', 'i.instance_name', 'e.instance_name')
    .select('m.user_id')
    .distinct()
    .where('e.type', '=', 'm.room.member')
    .where(rowAfter(after))
    .where(rowCoveredBy(upTo))
    .execute()
  return new Set(rows.map((row) => row.user_id))
}

/**
 * The user's latest membership per room covered by `upTo` (every room they ever had one in).
 *
 * @example
 * (await membershipsAt(db, '@alice:hs', tracker.currentToken())).get('!a:hs')?.membership // 'join'
 */
export async function membershipsAt(db: Db, userId: string, upTo: RoomStreamToken): Promise<ReadonlyMap<string, MembershipRow>> {
  return latestPerRoom(await membershipRows(db, userId, upTo))
}

/** Every membership event of the user covered by `upTo` (one indexed scan of their rows). */
async function membershipRows(db: Db, userId: string, upTo: RoomStreamToken): Promise<MembershipRow[]> {
  const rows = await db
    .selectFrom('room_memberships as m')
    .innerJoin('events as e', 'e.event_id', 'm.event_id')
    .leftJoin('instances as i', 'i.instance_name', 'e.instance_name')
    .select(['m.room_id', 'm.membership', 'm.event_id', 'e.depth', 'e.stream_ordering', 'i.instance_id'])
    .where('m.user_id', '=', userId)
    .where('e.outlier', '=', false)
    .where(rowCoveredBy(upTo))
    .execute()
  return rows.map((r) => ({ roomId: r.room_id, membership: r.membership, eventId: r.event_id, depth: r.depth, streamOrdering: r.stream_ordering, writerId: r.instance_id }))
}

function covers(token: RoomStreamToken, m: MembershipRow): boolean {
  if (m.streamOrdering <= 0n) return true
  return m.writerId === null ? m.streamOrdering <= token.stream : token.covers(m.writerId, m.streamOrdering)
}

/** The latest membership per room (stream order: imported history never overrides live events). */
function latestPerRoom(rows: readonly MembershipRow[]): Map<string, MembershipRow> {
  const latest = new Map<string, MembershipRow>()
  for (const row of rows) {
    const known = latest.get(row.roomId)
    if (!known || row.streamOrdering > known.streamOrdering) latest.set(row.roomId, row)
  }
  return latest
}

/** Which of `roomIds` have events in (since, upTo] (one query over the (room_id, stream_ordering) index). */
async function roomsWithEvents(db: Db, roomIds: readonly string[], since: RoomStreamToken, upTo: RoomStreamToken): Promise<Set<string>> {
  const rows = await db
    .selectFrom('events as e')
    .leftJoin('instances as i', 'i.instance_name', 'e.instance_name')
    .select('e.room_id')
    .distinct()
    .where('e.room_id', 'in', [...roomIds])
    .where(rowAfter(since))
    .where(rowCoveredBy(upTo))
    .execute()
  return new Set(rows.map((r) => r.room_id))
}

function typeMatches(patterns: readonly string[], type: string): boolean {
  return patterns.some((p) => new RegExp(`^${p.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*')}$`).test(type))
}

/**
 * A joined room's `unread_notifications`, and its `unread_thread_notifications` when the filter
 * asks for them (then the room's counts leave the threads' events out; threads with nothing
 * unread are left out).
 */
function unreadFields(counts: RoomUnread, byThread: boolean): JsonObject {
  const zero = { notification_count: 0, highlight_count: 0 }
  if (byThread) {
    const threads = [...counts].filter(([thread]) => thread !== 'main')
    return { unread_notifications: counts.get('main') ?? zero, ...(threads.length > 0 && { unread_thread_notifications: Object.fromEntries(threads) }) }
  }
  let total = zero
  for (const c of counts.values()) total = { notification_count: total.notification_count + c.notification_count, highlight_count: total.highlight_count + c.highlight_count }
  return { unread_notifications: total }
}

/** Whether `filter` lets every event through. */
function passesEverything(filter: EventFilter): boolean {
  return filter.types === undefined && filter.notTypes.length === 0 && filter.senders === undefined && filter.notSenders.length === 0 && filter.containsUrl === undefined
}

/** Whether `filter`'s `types` and `not_types` let an event of `type` through. */
function typeAllowed(filter: EventFilter, type: string): boolean {
  return (filter.types === undefined || typeMatches(filter.types, type)) && !typeMatches(filter.notTypes, type)
}

function filterEntries(entries: readonly AccountDataEntry[], filter: EventFilter): JsonObject[] {
  return entries
    .filter((e) => typeAllowed(filter, e.type))
    .map((e) => ({ type: e.type, content: e.content }))
}

/** Reads the sections of single rooms for one sync. */
class RoomSyncReader {
  constructor(
    private readonly db: Db,
    private readonly q: SyncQuery,
    private readonly viewer: Viewer,
  ) {}

  readonly #newEvents = new Map<string, readonly EventRow[]>()

  /** Every event of a joined room after `since`, when its incremental section read them all. */
  newEvents(roomId: string): readonly EventRow[] | undefined {
    return this.#newEvents.get(roomId)
  }

  /** The timeline and state of a `rooms.join` entry; `since` absent: the full form (last events, full state). */
  joinedSection(roomId: string, since: SyncToken | undefined): Promise<JsonObject> {
    return this.#section(roomId, since?.room, undefined)
  }

  /** A `rooms.leave` entry: the timeline up to `left` (the leave event). */
  async leftRoom(roomId: string, since: SyncToken | undefined, left: EventKey): Promise<JsonObject> {
    const section = await this.#section(roomId, since?.room, left)
    return { ...section, account_data: { events: [] } }
  }

  async #section(roomId: string, since: RoomStreamToken | undefined, until: EventKey | undefined): Promise<JsonObject> {
    const { db, q } = this
    const limit = q.filter.timelineLimit
    const bounds = [rowCoveredBy(q.upTo.room), ...(until ? [rowCoveredBy(tokenAt(until))] : [])]
    const read = await readPage(
      db,
      { roomId, where: [...bounds, ...(since ? [rowAfter(since)] : [])], order: since ? 'stream-desc' : 'topological-desc', limit: limit + 1, filter: q.filter.timeline },
      this.viewer,
    )
    const limited = read.rows.length > limit
    if (since !== undefined && until === undefined && !limited && passesEverything(q.filter.timeline)) this.#newEvents.set(roomId, read.rows)
    const page = read.rows.slice(0, limit).reverse()
    const first = page[0]
    const full = since === undefined || q.fullState
    const readState = async (): Promise<EventRow[]> => {
      if (!full && !limited) return []
      const where = [...bounds, ...(first ? [rowBefore(first)] : []), ...(full ? [] : [rowAfter(since!)])]
      return stateWhere(db, roomId, where, q.filter.state)
    }
    // The page came with its visibility and redactions; what else forming the visible events
    // needs (rarely anything) is read alongside the state, if any.
    const visible = read.visible(filterContainsUrl(page, q.filter.timeline))
    const [stateEvents, formTimeline] = await Promise.all([readState().then((rows) => toClientEvents(db, rows, this.viewer, q.now)), read.former(visible)])
    const timelineEvents = formTimeline(visible, q.now)
    const prevBatch = first ? tokenBefore(first) : until ? tokenAt(until) : q.upTo.room
    return { timeline: { events: timelineEvents, limited, prev_batch: prevBatch.toString() }, state: { events: stateEvents } }
  }
}
