import type { NewEvent, PersistedEvent, PersistRequest } from '../persisters/new-event.js'
import type { Persister } from '../persisters/persister.js'
import type { ShardMap } from '../persisters/shard-map.js'
import type { Notifier } from '../storage/streams/notifier.js'
import { RoomStreamToken } from '../storage/streams/room-stream-token.js'
import type { StreamTracker } from '../storage/streams/stream-tracker.js'

export type { NewEvent, PersistedEvent, PersistRequest }

/**
 * Hands events to the room's owning persister (ARCHITECTURE §2 steps 3–9). Implementations:
 * `createDirectSender` (the persister runs in this process) and the HTTP replication sender
 * (api/replication-sender.ts).
 */
export interface EventSender {
  /**
   * Persists `request.events` in order; resolves after commit AND after this process's stream
   * tracker covers them (read-your-writes), waiting at most `readYourWritesMs`.
   *
   * @throws RejectedEventError / NotOwnerError / StorageError as `Persister.persist`; the API
   *   maps them with `storageErrorStatus` (`ES_UNAVAILABLE` → 503 with `retry_after_ms`).
   */
  send(request: PersistRequest): Promise<PersistedEvent[]>
}

/** What the room and sync routes of an api process need beyond `ApiContext`. */
export interface RoomServices {
  readonly sender: EventSender
  /** This process's tracker of the `events` stream (started). */
  readonly tracker: StreamTracker
  readonly notifier: Notifier
  readonly shardMap: ShardMap
}

/** Longest wait for this process's tracker to cover an event it just sent. */
export const readYourWritesMs = 5_000

/**
 * The token just covering `events`: each writer at its largest stream ordering among them,
 * every other writer at 0 (`s<max>` when a writer's instance ID is not known yet).
 */
export function tokenCovering(tracker: StreamTracker, events: readonly PersistedEvent[]): RoomStreamToken {
  const positions = new Map<number, bigint>()
  for (const event of events) {
    if (event.stream_ordering <= 0n) continue
    const id = tracker.writerId(event.writer)
    if (id === undefined) return RoomStreamToken.live(maxOrdering(events))
    if ((positions.get(id) ?? 0n) < event.stream_ordering) positions.set(id, event.stream_ordering)
  }
  return RoomStreamToken.fromPositions(0n, positions)
}

function maxOrdering(events: readonly PersistedEvent[]): bigint {
  return events.reduce((max, e) => (e.stream_ordering > max ? e.stream_ordering : max), 0n)
}

/**
 * The monolith's sender: the persister runs in this process, so sending is a direct call.
 *
 * @example
 * const sender = createDirectSender(persister, tracker)
 * const [event] = await sender.send({ requestId, roomId, events: [message] })
 */
export function createDirectSender(persister: Persister, tracker: StreamTracker, waitMs = readYourWritesMs): EventSender {
  return {
    async send(request) {
      // The caller's request ID is fresh and this call is never repeated: no retry will look
      // its answer up (see `PersistRequest.recordAnswer`).
      const persisted = await persister.persist({ ...request, recordAnswer: false })
      await tracker.waitFor(tokenCovering(tracker, persisted), waitMs)
      return persisted
    },
  }
}

/**
 * A persister process that also serves clients: events for rooms it owns are persisted directly
 * (the router sends a room's writes to its owner, so this is the common case), others go to
 * `remote`.
 */
export function createOwnerFirstSender(persister: Persister, shardMap: ShardMap, tracker: StreamTracker, remote: EventSender): EventSender {
  const direct = createDirectSender(persister, tracker)
  return {
    send: (request) => (shardMap.ownerOf(request.roomId) === persister.writer ? direct.send(request) : remote.send(request)),
  }
}
