import PQueue from 'p-queue'

/** Options of `RoomQueue`. */
export interface RoomQueueOptions<T> {
  /** Rooms whose batches may run at the same time (≥ 1). */
  readonly roomConcurrency: number
  /** Most weight (events) a batch takes; a single heavier item still forms a batch on its own. */
  readonly maxBatchWeight: number
  readonly weight: (item: T) => number
  /** Whether `next` may join a batch that starts with `first` (e.g. live persists vs imports). */
  readonly compatible: (first: T, next: T) => boolean
  /** Processes one batch of one room. MUST settle every item itself; a rejection is only logged by `onError`. */
  readonly run: (roomId: string, batch: T[]) => Promise<void>
  readonly onError: (roomId: string, err: unknown) => void
}

/**
 * Per-room single flight with batching (ARCHITECTURE §2 step 5). States of a room:
 * - idle: no entry in `#rooms`;
 * - scheduled: an entry, and exactly one drain task for it queued or running in the p-queue.
 * `push` on an idle room schedules a drain; a drain takes the longest compatible prefix of the
 * room's pending items within `maxBatchWeight`, runs it, then reschedules itself at the back of
 * the p-queue while items remain (so a hot room cannot starve others) or makes the room idle.
 *
 * Guarantees: at most one batch per room runs at a time in this process; items of a room run in
 * push order; at most `roomConcurrency` rooms run at once. Cross-process exclusion is the
 * head-row lock's job, not this queue's.
 *
 * @example
 * const queue = new RoomQueue<Item>({ roomConcurrency: 32, maxBatchWeight: 200, weight: (i) => i.events.length,
 *   compatible: (a, b) => a.kind === b.kind, run: persistBatchFor, onError: (roomId, err) => log.error({ roomId, err }) })
 * queue.push('!r:hs', item)
 */
export class RoomQueue<T> {
  readonly #options: RoomQueueOptions<T>
  readonly #queue: PQueue
  /** Pending (not yet taken) items of each scheduled room. */
  readonly #rooms = new Map<string, T[]>()
  /** Sum of pending items over all rooms. */
  #pending = 0

  constructor(options: RoomQueueOptions<T>) {
    this.#options = options
    this.#queue = new PQueue({ concurrency: options.roomConcurrency })
  }

  /** Appends `item` to the room's queue. */
  push(roomId: string, item: T): void {
    const pending = this.#rooms.get(roomId)
    this.#pending++
    if (pending !== undefined) {
      pending.push(item)
      return
    }
    this.#rooms.set(roomId, [item])
    this.#schedule(roomId)
  }

  /** Items waiting (not yet in a running batch), over all rooms. */
  get pendingItems(): number {
    return this.#pending
  }

  /** Rooms with pending or running work. */
  get activeRooms(): number {
    return this.#rooms.size
  }

  /** Items waiting in one room's queue. */
  pendingFor(roomId: string): number {
    return this.#rooms.get(roomId)?.length ?? 0
  }

  /** Resolves once every pushed item's batch has run (items pushed meanwhile included). */
  async drain(): Promise<void> {
    await this.#queue.onIdle()
  }

  #schedule(roomId: string): void {
    void this.#queue.add(() => this.#drainOnce(roomId))
  }

  async #drainOnce(roomId: string): Promise<void> {
    // p-queue starts a task synchronously inside `add`; yielding once lets the rest of a
    // synchronous burst of pushes join this batch instead of waiting for the next one.
    await Promise.resolve()
    const pending = this.#rooms.get(roomId)
    if (pending === undefined || pending.length === 0) {
      this.#rooms.delete(roomId)
      return
    }
    const batch = this.#take(pending)
    this.#pending -= batch.length
    try {
      await this.#options.run(roomId, batch)
    } catch (err) {
      this.#options.onError(roomId, err)
    }
    if (pending.length > 0) this.#schedule(roomId)
    else this.#rooms.delete(roomId)
  }

  #take(pending: T[]): T[] {
    const first = pending[0] as T
    let weight = this.#options.weight(first)
    let count = 1
    while (count < pending.length) {
      const next = pending[count] as T
      const w = this.#options.weight(next)
      if (!this.#options.compatible(first, next) || weight + w > this.#options.maxBatchWeight) break
      weight += w
      count++
    }
    return pending.splice(0, count)
  }
}
