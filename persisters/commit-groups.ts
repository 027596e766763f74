/** Options of `CommitGroups`. */
export interface CommitGroupsOptions<W, R> {
  /** Groups running at once (≥ 1). */
  readonly concurrency: number
  /**
   * While a group runs, another starts beside it only when at least this much weight waits
   * (default 0: whenever a slot is free). Below it, the waiting work is left to gather into the
   * next group: a group's fixed cost is paid once for all of it. Work enough for a group of its
   * own runs in parallel.
   */
  readonly minParallelWeight?: number
  /**
   * Gathering under load (off when absent): after a group of at least `after` weight ends, the
   * next one waits up to `ms`, while no other group runs, for `weight`: a saturated system pays
   * a group's fixed cost for more work. A light load (groups below `after`) never waits.
   *
   * A wait that ran out of time with no work submitted while it waited gathered nothing the
   * next group would not have had anyway: a closed loop of callers that had all resubmitted.
   * Then the next groups (1, 2, 4, … up to 64 of them, doubling while such waits repeat) wait
   * only for the weight the last group had, so groups do not shrink but no time is lost.
   */
  readonly gather?: { readonly ms: number; readonly weight: number; readonly after: number }
  /** Most weight a group takes; a single heavier work item still forms a group on its own. */
  readonly maxWeight: number
  readonly weight: (work: W) => number
  /** Runs one group; resolves one result per work item, in order. A rejection fails every item of the group. */
  readonly run: (group: W[]) => Promise<R[]>
}

interface Waiting<W, R> {
  readonly work: W
  readonly answer: PromiseWithResolvers<R>
}

/**
 * Group commit without a timer: work submitted while `concurrency` groups are running waits,
 * and the next group to start takes everything waiting (up to `maxWeight`). An idle system
 * runs each item at once, alone; a busy one runs fewer, larger groups, so the per-group cost
 * (a transaction, its round trips, its WAL flush) is shared by more work exactly when the
 * system is short of capacity. With `minParallelWeight`, a busy system also keeps small work
 * for the next group rather than paying a second group's fixed cost beside the running one.
 *
 * @example
 * const groups = new CommitGroups<RoomBatch, BatchResult>({ concurrency: 2, maxWeight: 1000,
 *   weight: (b) => b.events, run: (batches) => persistInOneTransaction(batches) })
 * const result = await groups.submit(batch)
 */
export class CommitGroups<W, R> {
  readonly #options: CommitGroupsOptions<W, R>
  readonly #waiting: Waiting<W, R>[] = []
  #running = 0
  #pumpScheduled = false
  /** Until when (`performance.now()`) the next group gathers, and the timer that ends it. */
  #gatherUntil = 0
  /** The weight the gathering group waits for: `gather.weight`, or the last group's in a back-off. */
  #gatherWeight = 0
  #gatherTimer: NodeJS.Timeout | undefined
  /** Whether work was submitted while the group gathered (its timer set). */
  #arrivedWaiting = false
  /** Heavy groups left whose successors wait only for their weight, and the next back-off's length. */
  #backOffLeft = 0
  #backOff = 0
  /** Whether the gathering group waits for `gather.weight` (not in a back-off). */
  #reaching = false

  constructor(options: CommitGroupsOptions<W, R>) {
    if (!(options.concurrency >= 1)) throw new RangeError('CommitGroups: concurrency must be at least 1')
    this.#options = options
  }

  /** Runs `work` in the next group that starts; resolves with its own result. */
  submit(work: W): Promise<R> {
    const answer = Promise.withResolvers<R>()
    this.#waiting.push({ work, answer })
    if (this.#gatherTimer !== undefined) this.#arrivedWaiting = true
    // Work submitted in the same turn of the event loop (the requests of one replication call,
    // say) goes into one group: the pump runs once that turn's microtasks are done.
    if (!this.#pumpScheduled) {
      this.#pumpScheduled = true
      setImmediate(() => {
        this.#pumpScheduled = false
        this.#pump()
      })
    }
    return answer.promise
  }

  /** Work items submitted and not yet in a running group. */
  get waiting(): number {
    return this.#waiting.length
  }

  #pump(): void {
    if (this.#gathering()) return
    while (this.#running < this.#options.concurrency && this.#waiting.length > 0) {
      if (this.#running > 0 && this.#waitingWeight() < (this.#options.minParallelWeight ?? 0)) return
      const group: Waiting<W, R>[] = []
      let weight = 0
      while (this.#waiting.length > 0) {
        const next = this.#waiting[0] as Waiting<W, R>
        const w = this.#options.weight(next.work)
        if (group.length > 0 && weight + w > this.#options.maxWeight) break
        group.push(next)
        weight += w
        this.#waiting.shift()
      }
      this.#running++
      void this.#run(group, weight)
    }
  }

  /** Whether the next group still gathers; if so, a timer pumps when the gathering ends. */
  #gathering(): boolean {
    const gather = this.#options.gather
    if (gather === undefined || this.#waiting.length === 0) return false
    const left = this.#gatherUntil - performance.now()
    if (left <= 0 || this.#running > 0 || this.#waitingWeight() >= this.#gatherWeight) {
      // A group still running ends the gathering before it waited: no verdict on waiting.
      if (this.#reaching && this.#running === 0) this.#reached(left > 0)
      this.#reaching = false
      clearTimeout(this.#gatherTimer)
      this.#gatherTimer = undefined
      this.#gatherUntil = 0
      return false
    }
    this.#gatherTimer ??= setTimeout(() => {
      this.#gatherTimer = undefined
      this.#pump()
    }, left)
    return true
  }

  /**
   * A wait for `gather.weight` ended: by the weight, or by time with work submitted while it
   * waited, it ends any back-off; by time with nothing submitted while it waited, it backs off
   * longer.
   */
  #reached(filled: boolean): void {
    const arriving = filled || this.#arrivedWaiting
    this.#backOff = arriving ? 0 : Math.min(64, Math.max(1, this.#backOff * 2))
    this.#backOffLeft = this.#backOff
  }

  #waitingWeight(): number {
    let weight = 0
    for (const waiting of this.#waiting) weight += this.#options.weight(waiting.work)
    return weight
  }

  async #run(group: Waiting<W, R>[], weight: number): Promise<void> {
    try {
      const results = await this.#options.run(group.map((g) => g.work))
      group.forEach((g, i) => g.answer.resolve(results[i] as R))
    } catch (err) {
      for (const g of group) g.answer.reject(err)
    } finally {
      this.#running--
      const gather = this.#options.gather
      if (gather !== undefined && gather.ms > 0 && weight >= gather.after) {
        this.#gatherUntil = performance.now() + gather.ms
        this.#arrivedWaiting = false
        this.#reaching = this.#backOffLeft === 0
        if (this.#reaching) this.#gatherWeight = gather.weight
        else {
          this.#backOffLeft--
          this.#gatherWeight = Math.min(gather.weight, weight)
        }
      }
      this.#pump()
    }
  }
}
