/** Small statistics helpers for benchmark samples. */

/** Median and spread of the repetitions of one figure. */
export interface Spread {
  readonly median: number
  readonly min: number
  readonly max: number
}

/**
 * The `p`-th percentile (0–100) of `values` by nearest rank; 0 for no values.
 *
 * @example
 * percentile([5, 1, 3], 50) // 3
 */
export function percentile(values: readonly number[], p: number): number {
  return percentiles(values, [p])[0] as number
}

/**
 * `percentile` of `values` for each of `ps`, sorting `values` once.
 *
 * @example
 * percentiles([5, 1, 3], [50, 100]) // [3, 5]
 */
export function percentiles(values: readonly number[], ps: readonly number[]): number[] {
  if (values.length === 0) return ps.map(() => 0)
  const sorted = [...values].sort((a, b) => a - b)
  return ps.map((p) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] as number)
}

/**
 * Median, min and max of repeated measurements, rounded to `digits` decimals.
 *
 * @example
 * spread([10, 30, 20]) // { median: 20, min: 10, max: 30 }
 */
export function spread(values: readonly number[], digits = 3): Spread {
  return { median: round(percentile(values, 50), digits), min: round(Math.min(...values), digits), max: round(Math.max(...values), digits) }
}

/**
 * Rounds to `digits` decimals.
 *
 * @example
 * round(1.23456, 2) // 1.23
 */
export function round(value: number, digits = 3): number {
  const scale = 10 ** digits
  return Math.round(value * scale) / scale
}

/**
 * `measured / baseline`, rounded; 0 when the baseline is 0 (nothing measured).
 *
 * @example
 * ratio(450, 900) // 0.5
 */
export function ratio(measured: number, baseline: number): number {
  return baseline > 0 ? round(measured / baseline, 3) : 0
}
