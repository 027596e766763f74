import { StorageError } from '../../storage/errors.js'
import { createShardMap, shardStrategies } from '../shard-map.js'
import type { ShardStrategy } from '../shard-map.js'
import { builtInCalibration, defaultConcurrency, defaultMaxBatch, maxThroughputPerS, parallelCapacity, roomMaxThroughputPerS, transactionWorkMs } from './model.js'
import type { ServiceModel } from './model.js'
import { movedRooms, persisterNames } from './moved.js'
import type { MovedReport } from './moved.js'
import {
  createArrivals,
  createRng,
  createRoomSampler,
  traceActivity,
  uniformActivity,
  zipfActivity,
} from './workload.js'
import type { RoomActivity, TraceRow } from './workload.js'

/**
 * The discrete-event sharding simulator.
 *
 * Terms:
 * - Queueing delay: from an event's arrival at its persister to the start of the transaction that
 *   carries it. Latency: arrival to commit.
 * - Stream IDs are allocated from one global counter when a transaction starts, in arrival order
 *   within the transaction, and finish when it commits (as the shared Postgres sequence does).
 * - Linear position: the highest stream ID P such that every ID <= P has committed. Linear lag of
 *   an event: from its commit until the linear position reaches its ID, i.e. how long a reader
 *   that must see everything in order waits behind slower writers.
 * - Utilisation: solo-ms of work done during the arrival window [0, duration] / (the persister's
 *   full parallel capacity × duration), so 1 means every transaction slot was busy all the time.
 *   Busy fraction and mean queue depth use the same window. The drain after the window (queues
 *   left at the end) shows in `drainMs` and in the delays.
 *
 * Guarantees: a pure function of its options (no clock, no I/O): the same options give the same
 * result, byte for byte once serialised, on the same Node.js version.
 */

export type Distribution =
  | { readonly kind: 'uniform'; readonly rooms: number }
  | { readonly kind: 'zipf'; readonly rooms: number; readonly exponent: number }
  | { readonly kind: 'trace'; readonly rows: readonly TraceRow[]; readonly source: string }

export interface SimulationOptions {
  /** Default 1. Integer in [0, 2^32). */
  readonly seed?: number
  /** Default Zipf with exponent 1 over 10,000 rooms. */
  readonly distribution?: Distribution
  /** Mean arrival rate over all rooms, events/s. Default 2,000. */
  readonly ratePerS?: number
  /** Seconds of arrivals; queues are then drained. Default 60. */
  readonly durationS?: number
  /** In [0, 1]; 0 is Poisson. See `createArrivals`. Default 0. */
  readonly burstiness?: number
  /** Mean seconds in each burst state. Default 1. */
  readonly burstPeriodS?: number
  /** Number of event persisters, named persister1 … persisterN. Default 4. */
  readonly persisters?: number
  /** Default `rendezvous`. */
  readonly strategy?: ShardStrategy
  /** Room ID → persister name. */
  readonly pins?: Readonly<Record<string, string>>
  /** Missing fields come from the built-in calibration, batch 100 and concurrency 4. */
  readonly model?: Partial<ServiceModel>
  /** Called with the fraction of simulated arrival time done, at most a few hundred times. */
  readonly onProgress?: (fraction: number) => void
  /**
   * Called with every arrival, in order: the exact workload, so it can be replayed against a
   * real cluster (test/integration/simulator checks the simulator against one).
   */
  readonly onArrival?: (roomId: string, atMs: number) => void
}

export interface DelaySummary {
  readonly p50: number
  readonly p90: number
  readonly p99: number
  readonly max: number
  readonly mean: number
}

export interface PersisterResult {
  readonly name: string
  readonly rooms: number
  readonly events: number
  /** events / all events. */
  readonly share: number
  readonly transactions: number
  readonly meanBatch: number
  /** In [0, 1]; over the arrival window, see the module comment. */
  readonly utilisation: number
  /** Fraction of the arrival window with at least one transaction in flight. */
  readonly busyFraction: number
  /** Events waiting for a transaction, time-averaged over the arrival window. */
  readonly meanQueueDepth: number
  readonly maxQueueDepth: number
  readonly queueDelayMs: DelaySummary
  readonly latencyMs: DelaySummary
}

export interface RoomResult {
  readonly roomId: string
  readonly owner: string
  readonly pinned: boolean
  readonly events: number
  readonly share: number
  /** The room's weight in the workload (its analytic share). */
  readonly expectedShare: number
  readonly queueDelayMs: DelaySummary
  readonly latencyMs: DelaySummary
}

export interface SimulationResult {
  readonly seed: number
  readonly workload: {
    readonly distribution: Distribution['kind']
    readonly description: string
    readonly rooms: number
    readonly zipfExponent: number | null
    readonly ratePerS: number
    readonly durationS: number
    readonly burstiness: number
    readonly burstPeriodS: number
    readonly events: number
  }
  readonly topology: {
    readonly persisters: number
    readonly strategy: ShardStrategy
    readonly pins: Readonly<Record<string, string>>
  }
  readonly model: ServiceModel & {
    /** Full batches on every slot. */
    readonly persisterMaxEventsPerS: number
    /** One room alone: one transaction at a time, full batches. */
    readonly roomMaxEventsPerS: number
  }
  /** Time of the last commit, ms (at least the arrival duration). */
  readonly horizonMs: number
  /** How long queues took to drain after arrivals stopped, ms; large means overload. */
  readonly drainMs: number
  readonly persisters: readonly PersisterResult[]
  readonly events: {
    readonly queueDelayMs: DelaySummary
    readonly latencyMs: DelaySummary
    readonly linearLagMs: DelaySummary
    /** Largest number of IDs between the highest committed ID and the linear position. */
    readonly maxPositionGap: number
  }
  /** The room with the most events (lowest rank on a tie). */
  readonly hottestRoom: RoomResult
  /** Up to 10 rooms with the most events, hottest first, then every pinned room not among them. */
  readonly rooms: readonly RoomResult[]
  /** The room with the highest maximum latency. */
  readonly worstRoom: { readonly roomId: string; readonly owner: string; readonly maxLatencyMs: number }
  /** Quantiles of each delay over all events, for charts. */
  readonly cdf: {
    readonly quantiles: readonly number[]
    readonly queueDelayMs: readonly number[]
    readonly latencyMs: readonly number[]
    readonly linearLagMs: readonly number[]
  }
  readonly moved: MovedReport
}

export const simulationDefaults = Object.freeze({
  seed: 1,
  rooms: 10_000,
  zipfExponent: 1,
  ratePerS: 2_000,
  durationS: 60,
  burstiness: 0,
  burstPeriodS: 1,
  persisters: 4,
  strategy: 'rendezvous' as ShardStrategy,
})

/** Above this many expected events a run would need too much memory; lower rate or duration. */
export const maxSimulatedEvents = 20_000_000

const hotRoomCount = 10
/** 0, 0.02, …, 0.98, then the tail: 0.99, 0.995, 0.999, 1. */
const cdfQuantiles: readonly number[] = Object.freeze([
  ...Array.from({ length: 50 }, (_, i) => i / 50),
  0.99,
  0.995,
  0.999,
  1,
])

/** Builds the room activity a distribution describes. */
export function buildActivity(distribution: Distribution): RoomActivity {
  switch (distribution.kind) {
    case 'uniform':
      return uniformActivity(distribution.rooms)
    case 'zipf':
      return zipfActivity(distribution.rooms, distribution.exponent)
    case 'trace':
      return traceActivity(distribution.rows, distribution.source)
  }
}

/** The complete service model for partial overrides (built-in calibration where missing). */
export function resolveModel(partial: Partial<ServiceModel> = {}): ServiceModel {
  return {
    txnFixedMs: partial.txnFixedMs ?? builtInCalibration.txnFixedMs,
    perEventMs: partial.perEventMs ?? builtInCalibration.perEventMs,
    maxBatch: partial.maxBatch ?? defaultMaxBatch,
    concurrency: partial.concurrency ?? defaultConcurrency,
    parallelEfficiency: partial.parallelEfficiency ?? builtInCalibration.parallelEfficiency,
    source: partial.source ?? 'built-in defaults (2 ms/txn + 0.4 ms/event, conservative)',
  }
}

/**
 * Runs one simulation.
 *
 * @throws StorageError `ES_INVALID_PARAM` listing every invalid option, `ES_CONFIG_INVALID` for a
 *   pin naming an unknown persister.
 * @example
 * const result = runSimulation({ seed: 7, persisters: 3, ratePerS: 500, durationS: 10 })
 * result.persisters.map((p) => p.utilisation)
 */
export function runSimulation(options: SimulationOptions = {}): SimulationResult {
  const seed = options.seed ?? simulationDefaults.seed
  const distribution = options.distribution ?? {
    kind: 'zipf',
    rooms: simulationDefaults.rooms,
    exponent: simulationDefaults.zipfExponent,
  }
  const ratePerS = options.ratePerS ?? simulationDefaults.ratePerS
  const durationS = options.durationS ?? simulationDefaults.durationS
  const burstiness = options.burstiness ?? simulationDefaults.burstiness
  const burstPeriodS = options.burstPeriodS ?? simulationDefaults.burstPeriodS
  const persisterCount = options.persisters ?? simulationDefaults.persisters
  const strategy = options.strategy ?? simulationDefaults.strategy
  const pins = { ...(options.pins ?? {}) }
  const model = resolveModel(options.model)
  validate({ seed, ratePerS, durationS, burstiness, burstPeriodS, persisterCount, strategy, model })

  let activity: RoomActivity
  try {
    activity = buildActivity(distribution)
  } catch (err) {
    throw new StorageError('ES_INVALID_PARAM', (err as Error).message, { cause: err })
  }
  const roomIndex = new Map(activity.roomIds.map((id, i) => [id, i]))
  const unknownPins = Object.keys(pins).filter((roomId) => !roomIndex.has(roomId))
  if (unknownPins.length > 0) {
    throw new StorageError(
      'ES_INVALID_PARAM',
      `pinned room${unknownPins.length > 1 ? 's' : ''} ${unknownPins.join(', ')} not in the workload (rooms are ${describeRoomIds(activity.roomIds)})`,
    )
  }
  const names = persisterNames(persisterCount)
  const shardMap = createShardMap({ writers: names, strategy, pins })
  const nameIndex = new Map(names.map((name, i) => [name, i]))
  const roomCount = activity.roomIds.length
  const owner = new Int32Array(roomCount)
  activity.roomIds.forEach((roomId, i) => (owner[i] = nameIndex.get(shardMap.ownerOf(roomId)) as number))

  const rng = createRng(seed)
  const pickRoom = createRoomSampler(activity.weights, rng)
  const nextArrival = createArrivals({ ratePerS, durationS, burstiness, burstPeriodS }, rng)
  const engine = new Engine(model, persisterCount, owner, Math.ceil(ratePerS * durationS * 1.1) + 1024)

  const durationMs = durationS * 1000
  const progressEvery = Math.max(1024, Math.floor((ratePerS * durationS) / 200))
  let arrivalMs = nextArrival()
  let arrivals = 0
  for (;;) {
    const completionMs = engine.nextCompletionMs()
    if (arrivalMs === Infinity && completionMs === Infinity) break
    if (Math.min(arrivalMs, completionMs) > durationMs) engine.closeWindow(durationMs)
    if (arrivalMs <= completionMs) {
      const room = pickRoom()
      engine.arrive(room, arrivalMs)
      options.onArrival?.(activity.roomIds[room] as string, arrivalMs)
      arrivalMs = nextArrival()
      if (++arrivals % progressEvery === 0) options.onProgress?.(Math.min(1, arrivalMs / durationMs))
    } else {
      engine.complete(completionMs)
    }
  }
  options.onProgress?.(1)

  const horizonMs = Math.max(durationMs, engine.lastCommitMs)
  return summarise({
    seed,
    distribution,
    activity,
    ratePerS,
    durationS,
    burstiness,
    burstPeriodS,
    strategy,
    pins,
    model,
    names,
    owner,
    engine,
    horizonMs,
    durationMs,
  })
}

interface Transaction {
  readonly room: number
  readonly firstId: number
  readonly arrivalsMs: readonly number[]
  /** Solo-ms of work left; > 0 until the transaction completes. */
  remaining: number
}

interface PersisterState {
  /** Rooms with queued events and no transaction in flight, in the order they became ready. */
  readonly ready: number[]
  readyHead: number
  readonly active: Transaction[]
  /** Time up to which `active[].remaining` and the integrals are accounted. */
  lastMs: number
  /** Bumped whenever the scheduled completion changes; heap entries with an older one are stale. */
  version: number
  depth: number
  depthIntegral: number
  maxDepth: number
  workMs: number
  busyMs: number
  /** `workMs`, `busyMs` and `depthIntegral` at the end of the arrival window, once reached. */
  window: { workMs: number; busyMs: number; depthIntegral: number } | undefined
  transactions: number
  events: number
}

interface Completion {
  readonly timeMs: number
  readonly seq: number
  readonly persister: number
  readonly version: number
}

/** Binary min-heap of completions ordered by (timeMs, seq); seq makes ties deterministic. */
class CompletionHeap {
  private readonly items: Completion[] = []

  get size(): number {
    return this.items.length
  }

  peek(): Completion | undefined {
    return this.items[0]
  }

  push(item: Completion): void {
    const items = this.items
    let i = items.push(item) - 1
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (!before(item, items[parent] as Completion)) break
      items[i] = items[parent] as Completion
      i = parent
    }
    items[i] = item
  }

  pop(): Completion | undefined {
    const items = this.items
    const top = items[0]
    const last = items.pop()
    if (top === undefined || last === undefined || items.length === 0) return top
    let i = 0
    for (;;) {
      const left = 2 * i + 1
      if (left >= items.length) break
      const right = left + 1
      const child = right < items.length && before(items[right] as Completion, items[left] as Completion) ? right : left
      if (!before(items[child] as Completion, last)) break
      items[i] = items[child] as Completion
      i = child
    }
    items[i] = last
    return top
  }
}

function before(a: Completion, b: Completion): boolean {
  return a.timeMs < b.timeMs || (a.timeMs === b.timeMs && a.seq < b.seq)
}

/** Float32 values indexed by stream ID − 1, grown by doubling. */
class GrowableFloats {
  values: Float32Array
  constructor(capacity: number) {
    this.values = new Float32Array(capacity)
  }
  set(index: number, value: number): void {
    if (index >= this.values.length) {
      const grown = new Float32Array(Math.max(index + 1, this.values.length * 2))
      grown.set(this.values)
      this.values = grown
    }
    this.values[index] = value
  }
}

class Engine {
  readonly persisters: PersisterState[]
  private readonly heap = new CompletionHeap()
  private seq = 0
  private readonly roomQueues: number[][]
  private readonly roomHeads: Int32Array
  private readonly roomBusy: Uint8Array
  readonly roomEvents: Float64Array
  readonly roomMaxLatencyMs: Float64Array
  /** Room of each event, indexed by stream ID − 1 (as are the three delay arrays). */
  roomOfId: Int32Array
  readonly queueDelay: GrowableFloats
  readonly latency: GrowableFloats
  readonly linearLag: GrowableFloats
  /** Next stream ID to allocate; IDs start at 1. */
  nextId = 1
  /** Every ID <= linearPosition has committed. */
  linearPosition = 0
  maxCommittedId = 0
  maxPositionGap = 0
  /** Committed ranges above the linear position, keyed by first ID. */
  private readonly pendingRanges = new Map<number, { end: number; commitMs: number }>()
  lastCommitMs = 0
  private windowClosed = false

  constructor(
    private readonly model: ServiceModel,
    persisterCount: number,
    private readonly owner: Int32Array,
    capacity: number,
  ) {
    this.persisters = Array.from({ length: persisterCount }, () => ({
      ready: [],
      readyHead: 0,
      active: [],
      lastMs: 0,
      version: 0,
      depth: 0,
      depthIntegral: 0,
      maxDepth: 0,
      workMs: 0,
      busyMs: 0,
      window: undefined,
      transactions: 0,
      events: 0,
    }))
    const rooms = owner.length
    this.roomQueues = Array.from({ length: rooms }, () => [])
    this.roomHeads = new Int32Array(rooms)
    this.roomBusy = new Uint8Array(rooms)
    this.roomEvents = new Float64Array(rooms)
    this.roomMaxLatencyMs = new Float64Array(rooms)
    this.roomOfId = new Int32Array(capacity)
    this.queueDelay = new GrowableFloats(capacity)
    this.latency = new GrowableFloats(capacity)
    this.linearLag = new GrowableFloats(capacity)
  }

  get events(): number {
    return this.nextId - 1
  }

  nextCompletionMs(): number {
    for (;;) {
      const top = this.heap.peek()
      if (top === undefined) return Infinity
      if (top.version === (this.persisters[top.persister] as PersisterState).version) return top.timeMs
      this.heap.pop()
    }
  }

  arrive(room: number, nowMs: number): void {
    const p = this.owner[room] as number
    const state = this.persisters[p] as PersisterState
    this.advance(state, nowMs)
    ;(this.roomQueues[room] as number[]).push(nowMs)
    state.depth++
    if (state.depth > state.maxDepth) state.maxDepth = state.depth
    const queued = (this.roomQueues[room] as number[]).length - (this.roomHeads[room] as number)
    // A room enters the ready list when its first event queues and no transaction is in flight;
    // a room with a transaction in flight re-enters at its commit.
    if (queued === 1 && this.roomBusy[room] === 0) state.ready.push(room)
    if (this.startTransactions(state, nowMs)) this.schedule(p, nowMs)
  }

  complete(nowMs: number): void {
    const top = this.heap.pop() as Completion
    const p = top.persister
    const state = this.persisters[p] as PersisterState
    this.advance(state, nowMs)
    // The scheduled transaction has the least work left; others finishing within rounding go too.
    let least = Infinity
    for (const txn of state.active) least = Math.min(least, txn.remaining)
    const done = state.active.filter((txn) => txn.remaining <= least + 1e-9)
    const still = state.active.filter((txn) => txn.remaining > least + 1e-9)
    state.active.length = 0
    state.active.push(...still)
    for (const txn of done) this.commit(state, txn, nowMs)
    this.startTransactions(state, nowMs)
    this.schedule(p, nowMs)
  }

  private commit(state: PersisterState, txn: Transaction, nowMs: number): void {
    const room = txn.room
    this.roomBusy[room] = 0
    let roomMax = this.roomMaxLatencyMs[room] as number
    txn.arrivalsMs.forEach((arrivalMs, k) => {
      const latency = nowMs - arrivalMs
      this.latency.set(txn.firstId - 1 + k, latency)
      if (latency > roomMax) roomMax = latency
    })
    this.roomMaxLatencyMs[room] = roomMax
    const queue = this.roomQueues[room] as number[]
    if (queue.length > (this.roomHeads[room] as number)) state.ready.push(room)
    this.lastCommitMs = nowMs

    const end = txn.firstId + txn.arrivalsMs.length - 1
    if (end > this.maxCommittedId) this.maxCommittedId = end
    this.pendingRanges.set(txn.firstId, { end, commitMs: nowMs })
    for (;;) {
      const range = this.pendingRanges.get(this.linearPosition + 1)
      if (range === undefined) break
      this.pendingRanges.delete(this.linearPosition + 1)
      for (let id = this.linearPosition + 1; id <= range.end; id++) this.linearLag.set(id - 1, nowMs - range.commitMs)
      this.linearPosition = range.end
    }
    const gap = this.maxCommittedId - this.linearPosition
    if (gap > this.maxPositionGap) this.maxPositionGap = gap
  }

  /** Starts transactions while slots and ready rooms remain; true if any started. */
  private startTransactions(state: PersisterState, nowMs: number): boolean {
    let started = false
    while (state.active.length < this.model.concurrency && state.readyHead < state.ready.length) {
      const room = state.ready[state.readyHead++] as number
      const queue = this.roomQueues[room] as number[]
      const head = this.roomHeads[room] as number
      const take = Math.min(queue.length - head, this.model.maxBatch)
      const arrivalsMs = queue.slice(head, head + take)
      if (head + take === queue.length) {
        queue.length = 0
        this.roomHeads[room] = 0
      } else {
        this.roomHeads[room] = head + take
        if (head + take > 4096) {
          queue.splice(0, head + take)
          this.roomHeads[room] = 0
        }
      }
      const firstId = this.nextId
      this.nextId += take
      this.ensureIdCapacity(this.nextId)
      arrivalsMs.forEach((arrivalMs, k) => {
        this.queueDelay.set(firstId - 1 + k, nowMs - arrivalMs)
        this.roomOfId[firstId - 1 + k] = room
      })
      this.roomBusy[room] = 1
      this.roomEvents[room] = (this.roomEvents[room] as number) + take
      state.depth -= take
      state.transactions++
      state.events += take
      state.active.push({ room, firstId, arrivalsMs, remaining: transactionWorkMs(this.model, take) })
      started = true
    }
    if (state.readyHead > 4096 && state.readyHead * 2 > state.ready.length) {
      state.ready.splice(0, state.readyHead)
      state.readyHead = 0
    }
    return started
  }

  private ensureIdCapacity(nextId: number): void {
    if (nextId - 1 <= this.roomOfId.length) return
    const grown = new Int32Array(Math.max(nextId, this.roomOfId.length * 2))
    grown.set(this.roomOfId)
    this.roomOfId = grown
  }

  /** Accounts work and integrals of `state` from its last update to `nowMs`. */
  private advance(state: PersisterState, nowMs: number): void {
    const dt = nowMs - state.lastMs
    if (dt <= 0) return
    const k = state.active.length
    if (k > 0) {
      const capacity = parallelCapacity(this.model, k)
      const perTransaction = (dt * capacity) / k
      for (const txn of state.active) txn.remaining -= perTransaction
      state.workMs += dt * capacity
      state.busyMs += dt
    }
    state.depthIntegral += state.depth * dt
    state.lastMs = nowMs
  }

  private schedule(p: number, nowMs: number): void {
    const state = this.persisters[p] as PersisterState
    state.version++
    const k = state.active.length
    if (k === 0) return
    let least = Infinity
    for (const txn of state.active) least = Math.min(least, txn.remaining)
    const rate = parallelCapacity(this.model, k) / k
    this.heap.push({ timeMs: nowMs + Math.max(0, least) / rate, seq: this.seq++, persister: p, version: state.version })
  }

  /**
   * Records every persister's integrals at the end of the arrival window. MUST be called before
   * any event later than `windowEndMs` is handled; later calls do nothing.
   */
  closeWindow(windowEndMs: number): void {
    if (this.windowClosed) return
    this.windowClosed = true
    for (const state of this.persisters) {
      if (state.window !== undefined) continue
      this.advance(state, windowEndMs)
      state.window = { workMs: state.workMs, busyMs: state.busyMs, depthIntegral: state.depthIntegral }
    }
  }
}

interface SummaryInput {
  seed: number
  distribution: Distribution
  activity: RoomActivity
  ratePerS: number
  durationS: number
  burstiness: number
  burstPeriodS: number
  strategy: ShardStrategy
  pins: Record<string, string>
  model: ServiceModel
  names: string[]
  owner: Int32Array
  engine: Engine
  horizonMs: number
  durationMs: number
}

function summarise(input: SummaryInput): SimulationResult {
  const { activity, engine, names, owner, model, horizonMs } = input
  engine.closeWindow(input.durationMs)
  const total = engine.events
  const queueDelay = engine.queueDelay.values.subarray(0, total)
  const latency = engine.latency.values.subarray(0, total)
  const linearLag = engine.linearLag.values.subarray(0, total)
  const roomOfId = engine.roomOfId.subarray(0, total)

  const byPersister = groupBy(total, names.length, (i) => owner[roomOfId[i] as number] as number)
  const roomsPerPersister = new Array<number>(names.length).fill(0)
  for (const p of owner) roomsPerPersister[p] = (roomsPerPersister[p] as number) + 1
  const fullCapacity = parallelCapacity(model, model.concurrency)
  const windowMs = input.durationMs
  const persisters: PersisterResult[] = engine.persisters.map((state, p) => {
    const window = state.window as NonNullable<PersisterState['window']>
    return {
    name: names[p] as string,
    rooms: roomsPerPersister[p] as number,
    events: state.events,
    share: round(total === 0 ? 0 : state.events / total, 6),
    transactions: state.transactions,
    meanBatch: round(state.transactions === 0 ? 0 : state.events / state.transactions, 3),
    utilisation: round(Math.min(1, window.workMs / (fullCapacity * windowMs)), 6),
    busyFraction: round(Math.min(1, window.busyMs / windowMs), 6),
    meanQueueDepth: round(window.depthIntegral / windowMs, 3),
    maxQueueDepth: state.maxDepth,
    queueDelayMs: summarize(pick(queueDelay, byPersister[p] as Int32Array)),
    latencyMs: summarize(pick(latency, byPersister[p] as Int32Array)),
    }
  })

  // Rooms by simulated events, hottest first; ties by rank.
  const roomCount = activity.roomIds.length
  const topRooms: number[] = []
  for (let r = 0; r < roomCount; r++) {
    insertTop(topRooms, r, engine.roomEvents, hotRoomCount)
  }
  const pinnedIndices = activity.roomIds
    .map((id, i) => (id in input.pins ? i : -1))
    .filter((i) => i >= 0 && !topRooms.includes(i))
  const selected = [...topRooms, ...pinnedIndices]
  const slotOfRoom = new Map(selected.map((room, slot) => [room, slot]))
  const byRoom = groupBy(total, selected.length, (i) => slotOfRoom.get(roomOfId[i] as number) ?? -1)
  const roomResults: RoomResult[] = selected.map((room, slot) => ({
    roomId: activity.roomIds[room] as string,
    owner: names[owner[room] as number] as string,
    pinned: (activity.roomIds[room] as string) in input.pins,
    events: engine.roomEvents[room] as number,
    share: round(total === 0 ? 0 : (engine.roomEvents[room] as number) / total, 6),
    expectedShare: round(activity.weights[room] as number, 6),
    queueDelayMs: summarize(pick(queueDelay, byRoom[slot] as Int32Array)),
    latencyMs: summarize(pick(latency, byRoom[slot] as Int32Array)),
  }))

  let worst = 0
  for (let r = 1; r < roomCount; r++) {
    if ((engine.roomMaxLatencyMs[r] as number) > (engine.roomMaxLatencyMs[worst] as number)) worst = r
  }

  const sortedQueue = sorted(queueDelay)
  const sortedLatency = sorted(latency)
  const sortedLag = sorted(linearLag)
  const distribution = input.distribution
  return {
    seed: input.seed,
    workload: {
      distribution: distribution.kind,
      description: activity.description,
      rooms: roomCount,
      zipfExponent: distribution.kind === 'zipf' ? distribution.exponent : null,
      ratePerS: input.ratePerS,
      durationS: input.durationS,
      burstiness: input.burstiness,
      burstPeriodS: input.burstPeriodS,
      events: total,
    },
    topology: { persisters: names.length, strategy: input.strategy, pins: sortKeys(input.pins) },
    model: {
      ...model,
      persisterMaxEventsPerS: round(maxThroughputPerS(model), 1),
      roomMaxEventsPerS: round(roomMaxThroughputPerS(model), 1),
    },
    horizonMs: round(horizonMs, 3),
    drainMs: round(Math.max(0, engine.lastCommitMs - input.durationMs), 3),
    persisters,
    events: {
      queueDelayMs: summarizeSorted(sortedQueue),
      latencyMs: summarizeSorted(sortedLatency),
      linearLagMs: summarizeSorted(sortedLag),
      maxPositionGap: engine.maxPositionGap,
    },
    hottestRoom: roomResults[0] as RoomResult,
    rooms: roomResults,
    worstRoom: {
      roomId: activity.roomIds[worst] as string,
      owner: names[owner[worst] as number] as string,
      maxLatencyMs: round(engine.roomMaxLatencyMs[worst] as number, 3),
    },
    cdf: {
      quantiles: cdfQuantiles,
      queueDelayMs: cdfQuantiles.map((q) => round(quantile(sortedQueue, q), 3)),
      latencyMs: cdfQuantiles.map((q) => round(quantile(sortedLatency, q), 3)),
      linearLagMs: cdfQuantiles.map((q) => round(quantile(sortedLag, q), 3)),
    },
    moved: movedRooms({ roomIds: activity.roomIds, weights: activity.weights, persisters: names.length, pins: input.pins }),
  }
}

function validate(values: {
  seed: number
  ratePerS: number
  durationS: number
  burstiness: number
  burstPeriodS: number
  persisterCount: number
  strategy: ShardStrategy
  model: ServiceModel
}): void {
  const problems: string[] = []
  const { model } = values
  if (!Number.isInteger(values.seed) || values.seed < 0 || values.seed > 0xffffffff) problems.push(`seed must be an integer in [0, 4294967295], got ${values.seed}`)
  if (!(values.ratePerS > 0) || !Number.isFinite(values.ratePerS)) problems.push(`rate must be > 0 events/s, got ${values.ratePerS}`)
  if (!(values.durationS > 0) || !Number.isFinite(values.durationS)) problems.push(`duration must be > 0 s, got ${values.durationS}`)
  if (!(values.burstiness >= 0 && values.burstiness <= 1)) problems.push(`burstiness must be in [0, 1], got ${values.burstiness}`)
  if (!(values.burstPeriodS > 0) || !Number.isFinite(values.burstPeriodS)) problems.push(`burst period must be > 0 s, got ${values.burstPeriodS}`)
  if (!Number.isInteger(values.persisterCount) || values.persisterCount < 1 || values.persisterCount > 1000) problems.push(`persisters must be an integer in [1, 1000], got ${values.persisterCount}`)
  if (!shardStrategies.includes(values.strategy)) problems.push(`strategy must be ${shardStrategies.join(' or ')}, got ${values.strategy}`)
  if (!(model.txnFixedMs > 0) || !Number.isFinite(model.txnFixedMs)) problems.push(`txn fixed cost must be > 0 ms, got ${model.txnFixedMs}`)
  if (!(model.perEventMs >= 0) || !Number.isFinite(model.perEventMs)) problems.push(`per-event cost must be >= 0 ms, got ${model.perEventMs}`)
  if (!Number.isInteger(model.maxBatch) || model.maxBatch < 1) problems.push(`max batch must be an integer >= 1, got ${model.maxBatch}`)
  if (!Number.isInteger(model.concurrency) || model.concurrency < 1) problems.push(`concurrency must be an integer >= 1, got ${model.concurrency}`)
  if (!(model.parallelEfficiency >= 0 && model.parallelEfficiency <= 1)) problems.push(`parallel efficiency must be in [0, 1], got ${model.parallelEfficiency}`)
  const expected = values.ratePerS * values.durationS
  if (expected > maxSimulatedEvents) {
    problems.push(`rate × duration = ${Math.round(expected).toLocaleString('en-US')} events exceeds the ${maxSimulatedEvents.toLocaleString('en-US')} a run can hold; lower the rate or the duration`)
  }
  if (problems.length > 0) throw new StorageError('ES_INVALID_PARAM', problems.join('; '))
}

/** Event indices per group; `groupOf` returns the group of event i, or -1 for none. */
function groupBy(total: number, groups: number, groupOf: (i: number) => number): Int32Array[] {
  const counts = new Int32Array(groups)
  const assigned = new Int32Array(total)
  for (let i = 0; i < total; i++) {
    const g = groupOf(i)
    assigned[i] = g
    if (g >= 0) counts[g] = (counts[g] as number) + 1
  }
  const result = Array.from(counts, (count) => new Int32Array(count))
  const filled = new Int32Array(groups)
  for (let i = 0; i < total; i++) {
    const g = assigned[i] as number
    if (g < 0) continue
    ;(result[g] as Int32Array)[filled[g] as number] = i
    filled[g] = (filled[g] as number) + 1
  }
  return result
}

function pick(values: Float32Array, indices: Int32Array): Float32Array {
  const out = new Float32Array(indices.length)
  for (let i = 0; i < indices.length; i++) out[i] = values[indices[i] as number] as number
  return out
}

function insertTop(top: number[], room: number, events: Float64Array, limit: number): void {
  const value = events[room] as number
  if (top.length === limit && value <= (events[top[top.length - 1] as number] as number)) return
  let i = top.length
  while (i > 0 && (events[top[i - 1] as number] as number) < value) i--
  top.splice(i, 0, room)
  if (top.length > limit) top.pop()
}

function sorted(values: Float32Array): Float32Array {
  return Float32Array.from(values).sort()
}

/** Nearest-rank quantile of an ascending array; 0 for an empty one. */
function quantile(ascending: Float32Array, q: number): number {
  if (ascending.length === 0) return 0
  const rank = Math.max(1, Math.ceil(q * ascending.length))
  return ascending[Math.min(rank, ascending.length) - 1] as number
}

function summarize(values: Float32Array): DelaySummary {
  return summarizeSorted(sorted(values))
}

function summarizeSorted(ascending: Float32Array): DelaySummary {
  let sum = 0
  for (const value of ascending) sum += value
  return {
    p50: round(quantile(ascending, 0.5), 3),
    p90: round(quantile(ascending, 0.9), 3),
    p99: round(quantile(ascending, 0.99), 3),
    max: round(quantile(ascending, 1), 3),
    mean: round(ascending.length === 0 ? 0 : sum / ascending.length, 3),
  }
}

function round(value: number, digits: number): number {
  const factor = 10 ** digits
  return Math.round(value * factor) / factor
}

function sortKeys(record: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(record).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
}

function describeRoomIds(roomIds: readonly string[]): string {
  if (roomIds.length <= 3) return roomIds.join(', ')
  return `${roomIds[0]}, ${roomIds[1]} … ${roomIds[roomIds.length - 1]}`
}
