import type { LatencySummary, LoadResult } from './loadgen.js'

/**
 * The end-to-end goals of issue 7, set for 1 api worker + 2 persisters + Redis at C = 64 with
 * Zipf-skewed rooms, on a 2-core machine with durability on (everything on the same cores).
 * `make bench` checks that topology's figures against them, so its output says which goals the
 * machine it ran on meets.
 */

/** One goal against one measured figure. */
export interface GoalCheck {
  readonly goal: string
  readonly value: number
  readonly met: boolean
}

export interface GoalChecks {
  /** Every goal met. */
  readonly met: boolean
  readonly checks: readonly GoalCheck[]
}

/** A latency p99, or NaN when nothing was measured (an empty summary reports 0). */
const p99 = (summary: LatencySummary): number => (summary.count === 0 ? Number.NaN : summary.p99)

const goals: readonly { readonly goal: string; readonly value: (r: LoadResult) => number; readonly met: (v: number) => boolean }[] = [
  { goal: 'events/s >= 3000', value: (r) => r.eventsPerS, met: (v) => v >= 3000 },
  { goal: 'send p99 <= 50 ms', value: (r) => p99(r.sendMs), met: (v) => v <= 50 },
  { goal: 'sync wake-up p99 under load <= 20 ms', value: (r) => p99(r.syncWakeupMs), met: (v) => v <= 20 },
  { goal: 'probes lost = 0', value: (r) => r.probesLost, met: (v) => v === 0 },
  { goal: 'hot room send p99 <= 100 ms', value: (r) => p99(r.hotRoomSendMs), met: (v) => v <= 100 },
]

/**
 * Checks a run's figures against the goals. A latency with no samples (no send answered, no
 * probe delivered) fails its goal rather than passing as 0.
 *
 * @example
 * const { met, checks } = checkE2eGoals(result)
 * // checks[0] → { goal: 'events/s >= 3000', value: 3842, met: true }
 */
export function checkE2eGoals(result: LoadResult): GoalChecks {
  const checks = goals.map(({ goal, value, met }) => {
    const v = value(result)
    return { goal, value: v, met: Number.isFinite(v) && met(v) }
  })
  return { met: checks.every((c) => c.met), checks }
}

/** One line for the progress log: how many goals are met and each figure against its goal. */
export function describeGoalChecks({ checks }: GoalChecks): string {
  const met = checks.filter((c) => c.met).length
  return `${met}/${checks.length} goals met: ${checks.map((c) => `${c.goal}: ${c.value} ${c.met ? 'met' : 'NOT met'}`).join('; ')}`
}
