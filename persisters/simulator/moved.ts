import { createShardMap, shardStrategies } from '../shard-map.js'
import type { ShardStrategy } from '../shard-map.js'

/** Writer names the simulator uses: `persister1` … `persisterN`. */
export function persisterNames(count: number): string[] {
  return Array.from({ length: count }, (_, i) => `persister${i + 1}`)
}

export interface MovedRooms {
  readonly strategy: ShardStrategy
  /** Rooms whose owner differs between the two writer lists. */
  readonly rooms: number
  /** `rooms` / all rooms. */
  readonly fraction: number
  /** Share of the workload's traffic (by room weight) in the moved rooms. */
  readonly trafficFraction: number
  /** What an unpinned, uniformly hashed room moves with: 1/(N+1), N/(N+1) on adding; 1/N, (N-1)/N on removing. */
  readonly expectedFraction: number
}

export interface MovedChange {
  readonly from: number
  readonly to: number
  /** Present only when removing: the removed writer. */
  readonly removed?: string
  /** One entry per strategy, in `shardStrategies` order. */
  readonly strategies: readonly MovedRooms[]
}

export interface MovedReport {
  readonly rooms: number
  /** N → N+1: `persister{N+1}` appended. */
  readonly add: MovedChange
  /** N → N−1: the last writer, `persisterN`, removed; null when N = 1. */
  readonly remove: MovedChange | null
}

export interface MovedOptions {
  readonly roomIds: readonly string[]
  /** Relative activity per room (same order as roomIds); uniform when omitted. */
  readonly weights?: ArrayLike<number>
  readonly persisters: number
  /**
   * Pins stay in force while their writer exists. When removing, pins to the removed writer are
   * dropped and their rooms go wherever the strategy puts them (they count as moved).
   */
  readonly pins?: Readonly<Record<string, string>>
}

/**
 * Rooms moved when a writer is added (N → N+1) or removed (N → N−1), for every strategy, using
 * the same `createShardMap` the cluster routes with.
 *
 * @example
 * movedRooms({ roomIds: ['!a:x', '!b:x'], persisters: 4 }).add.strategies[0].fraction
 */
export function movedRooms(options: MovedOptions): MovedReport {
  const n = options.persisters
  const pins = options.pins ?? {}
  const before = persisterNames(n)
  const added = persisterNames(n + 1)
  const removedName = before[n - 1] as string
  const remaining = before.slice(0, -1)
  const keptPins = Object.fromEntries(Object.entries(pins).filter(([, writer]) => writer !== removedName))
  return {
    rooms: options.roomIds.length,
    add: {
      from: n,
      to: n + 1,
      strategies: shardStrategies.map((strategy) =>
        compare(options, strategy, before, added, pins, pins, strategy === 'rendezvous' ? 1 / (n + 1) : n / (n + 1)),
      ),
    },
    remove:
      n < 2
        ? null
        : {
            from: n,
            to: n - 1,
            removed: removedName,
            strategies: shardStrategies.map((strategy) =>
              compare(options, strategy, before, remaining, pins, keptPins, strategy === 'rendezvous' ? 1 / n : (n - 1) / n),
            ),
          },
  }
}

function compare(
  options: MovedOptions,
  strategy: ShardStrategy,
  writersBefore: readonly string[],
  writersAfter: readonly string[],
  pinsBefore: Readonly<Record<string, string>>,
  pinsAfter: Readonly<Record<string, string>>,
  expectedFraction: number,
): MovedRooms {
  const mapBefore = createShardMap({ writers: writersBefore, strategy, pins: pinsBefore })
  const mapAfter = createShardMap({ writers: writersAfter, strategy, pins: pinsAfter })
  let moved = 0
  let movedWeight = 0
  let totalWeight = 0
  options.roomIds.forEach((roomId, i) => {
    const weight = options.weights ? (options.weights[i] as number) : 1
    totalWeight += weight
    if (mapBefore.ownerOf(roomId) !== mapAfter.ownerOf(roomId)) {
      moved++
      movedWeight += weight
    }
  })
  const rooms = options.roomIds.length
  return {
    strategy,
    rooms: moved,
    fraction: round6(rooms === 0 ? 0 : moved / rooms),
    trafficFraction: round6(totalWeight === 0 ? 0 : movedWeight / totalWeight),
    expectedFraction: round6(expectedFraction),
  }
}

function round6(value: number): number {
  return Math.round(value * 1e6) / 1e6
}
