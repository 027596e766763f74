/** What a closed-loop run completed within its window. */
export interface LoopOutcome {
  /** Operations that completed before the deadline. */
  readonly ops: number
  /** Units (events, IDs) those operations carried. */
  readonly units: number
  readonly elapsedMs: number
}

/**
 * Runs `concurrency` loops that each call `op` back to back for `durationMs`, and counts what
 * completed before the deadline (operations still in flight then are awaited, not counted).
 * `op(worker, seq)` resolves with the number of units it carried. A failing `op` rejects the run.
 *
 * @example
 * const { units, elapsedMs } = await closedLoop(4, 3000, async () => { await insertTen(); return 10 })
 * const perSecond = (units * 1000) / elapsedMs
 */
export async function closedLoop(concurrency: number, durationMs: number, op: (worker: number, seq: number) => Promise<number>): Promise<LoopOutcome> {
  const started = performance.now()
  const deadline = started + durationMs
  let ops = 0
  let units = 0
  let seq = 0
  const worker = async (id: number): Promise<void> => {
    while (performance.now() < deadline) {
      const carried = await op(id, seq++)
      if (performance.now() <= deadline) {
        ops++
        units += carried
      }
    }
  }
  await Promise.all(Array.from({ length: concurrency }, (_, i) => worker(i)))
  return { ops, units, elapsedMs: durationMs }
}
