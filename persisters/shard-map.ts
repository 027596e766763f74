import { hash } from 'node:crypto'
import { StorageError } from '../storage/errors.js'

/**
 * How a shard map assigns rooms to event writers.
 * - `rendezvous`: highest-random-weight hashing; adding a writer moves only the rooms the new
 *   writer wins (about 1/(N+1) of them), removing one moves only that writer's rooms.
 * - `modulo`: Synapse's `stream_writers.events` mapping; any change of N remaps about
 *   N/(N+1) of the rooms, and reordering the writer list remaps rooms too.
 */
export type ShardStrategy = 'rendezvous' | 'modulo'

export const shardStrategies: readonly ShardStrategy[] = ['rendezvous', 'modulo']

export interface ShardMapOptions {
  /** Event writer names. Non-empty, unique, without NUL characters. Order matters for `modulo` only. */
  readonly writers: readonly string[]
  /** Default `rendezvous`. */
  readonly strategy?: ShardStrategy
  /** Room ID → writer name; each named writer MUST be in `writers`. Pins win over the strategy. */
  readonly pins?: Readonly<Record<string, string>>
}

export interface ShardMap {
  /** The configured writers, in configured order (frozen copy). */
  readonly writers: readonly string[]
  readonly strategy: ShardStrategy
  /** The writer that owns `roomId`: a pure function of (options, roomId), identical in every process. */
  ownerOf(roomId: string): string
}

/**
 * Builds the room → writer function shared by api workers (routing), persisters (ownership check)
 * and the sharding simulator.
 *
 * WIRE-LEVEL CONTRACT: every process of a deployment MUST compute the same owner, across Node
 * versions and Myelin releases, so both hash functions below are frozen. Changing either one
 * remaps rooms and is a breaking change for running clusters; `test/unit/persisters/shard-map.spec.ts`
 * pins known vectors.
 * - `rendezvous`: score(w, r) = first 8 bytes of SHA-256(UTF-8(w + "\u0000" + r)) read as a
 *   big-endian unsigned 64-bit integer; owner = writer with the highest score, a tie going to the
 *   writer whose name sorts first by UTF-16 code units. Writer names contain no NUL, so the
 *   hashed string identifies (w, r) uniquely. Writer order in the configuration does not matter.
 * - `modulo`: SHA-256(UTF-8(r)) read as a 256-bit LITTLE-endian unsigned integer, modulo N,
 *   indexes `writers` in configured order (Synapse, `synapse/config/workers.py`). One writer owns
 *   every room.
 * Room IDs are encoded as UTF-8; a lone surrogate becomes U+FFFD (Synapse would reject such an ID).
 *
 * Cost: `rendezvous` hashes once per writer, `modulo` once, for a room not seen lately; owners
 * of up to `cachedRooms` rooms are remembered (a send asks twice: where to route, and whether
 * the persister owns it).
 *
 * @throws StorageError `ES_CONFIG_INVALID` for no writers, duplicate or malformed writer names, an
 *   unknown strategy, or a pin naming a writer not in `writers` (the message lists every problem).
 * @example
 * const map = createShardMap({ writers: ['persister1', 'persister2'], pins: { '!hot:example.org': 'persister2' } })
 * map.ownerOf('!hot:example.org') // 'persister2'
 * map.ownerOf('!abc:example.org') // 'persister1' or 'persister2', the same in every process
 */
export function createShardMap(options: ShardMapOptions): ShardMap {
  const strategy = options.strategy ?? 'rendezvous'
  const writers = Object.freeze([...options.writers])
  const problems: string[] = []
  if (writers.length === 0) problems.push('at least one event writer is required')
  const seen = new Set<string>()
  for (const writer of writers) {
    if (typeof writer !== 'string' || writer.length === 0) problems.push('writer names must be non-empty strings')
    else if (writer.includes('\u0000')) problems.push(`writer name ${JSON.stringify(writer)} contains a NUL character`)
    else if (seen.has(writer)) problems.push(`writer ${JSON.stringify(writer)} is listed twice`)
    seen.add(writer)
  }
  if (!shardStrategies.includes(strategy)) {
    problems.push(`unknown shard strategy ${JSON.stringify(strategy)} (expected ${shardStrategies.join(' or ')})`)
  }
  const pins = new Map<string, string>()
  for (const [roomId, writer] of Object.entries(options.pins ?? {})) {
    if (!seen.has(writer)) {
      problems.push(`pin of ${roomId} names writer ${JSON.stringify(writer)}, which is not an event writer`)
    }
    pins.set(roomId, writer)
  }
  if (problems.length > 0) {
    throw new StorageError('ES_CONFIG_INVALID', `invalid shard map: ${problems.join('; ')}`)
  }
  const owner = strategy === 'modulo' ? moduloOwner(writers) : rendezvousOwner(writers)
  // With one writer nothing is hashed, so there is nothing to remember.
  const hashed = writers.length === 1 ? owner : remembered(owner)
  const ownerOf =
    pins.size === 0 ? hashed : (roomId: string): string => pins.get(roomId) ?? hashed(roomId)
  return Object.freeze({ writers, strategy, ownerOf })
}

/** Rooms whose owner a shard map remembers; past that it forgets them all and starts again. */
export const cachedRooms = 50_000

function remembered(owner: (roomId: string) => string): (roomId: string) => string {
  const owners = new Map<string, string>()
  return (roomId) => {
    let found = owners.get(roomId)
    if (found === undefined) {
      found = owner(roomId)
      if (owners.size >= cachedRooms) owners.clear()
      owners.set(roomId, found)
    }
    return found
  }
}

function rendezvousOwner(writers: readonly string[]): (roomId: string) => string {
  // Tie-break by name is order-independent only if candidates are visited in name order and a
  // later candidate must score strictly higher to win.
  const byName = [...writers].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
  const prefixes = byName.map((writer) => `${writer}\u0000`)
  const only = byName[0]
  if (byName.length === 1 && only !== undefined) return () => only
  return (roomId) => {
    let best = 0
    let bestHi = -1
    let bestLo = -1
    for (let i = 0; i < prefixes.length; i++) {
      const digest = hash('sha256', prefixes[i] + roomId, 'buffer')
      const hi = digest.readUInt32BE(0)
      const lo = digest.readUInt32BE(4)
      if (hi > bestHi || (hi === bestHi && lo > bestLo)) {
        best = i
        bestHi = hi
        bestLo = lo
      }
    }
    return byName[best] as string
  }
}

function moduloOwner(writers: readonly string[]): (roomId: string) => string {
  const n = writers.length
  const only = writers[0]
  if (n === 1 && only !== undefined) return () => only
  return (roomId) => {
    const digest = hash('sha256', roomId, 'buffer')
    // Horner's rule from the most significant byte (index 31, little-endian); every intermediate
    // stays below 256 * n, exact in a double for any realistic n.
    let remainder = 0
    for (let i = digest.length - 1; i >= 0; i--) remainder = (remainder * 256 + (digest[i] as number)) % n
    return writers[remainder] as string
  }
}
