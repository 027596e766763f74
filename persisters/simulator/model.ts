import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

/**
 * Service-time model of one event persister.
 *
 * - A persist transaction of a batch of `b` events of one room needs
 *   `txnFixedMs + perEventMs * b` ms of work when it runs alone (the "solo" time).
 * - Batching per room, as the persister does: a room has at most one transaction in flight; when
 *   it starts, it takes every event queued for the room, up to `maxBatch`.
 * - Up to `concurrency` room transactions run at once and share the persister's (and its
 *   database's) capacity by processor sharing: with `k` in flight the persister completes
 *   `1 + (k - 1) * parallelEfficiency` solo-ms of work per ms, split evenly among the `k`.
 *   Efficiency 1 would be `k` independent servers, 0 a single server; the measured durable
 *   PostgreSQL figures (TOOLCHAIN.md: 100-row transactions, 24.7k events/s with 1 client, 43.9k
 *   with 4) give about 0.26.
 * - Persisters are independent: a database shared by several persisters is not modelled.
 */
export interface ServiceModel {
  /** Solo ms per transaction regardless of its size (commit, fsync, round trips). > 0. */
  readonly txnFixedMs: number
  /** Solo ms per event in a transaction. >= 0. */
  readonly perEventMs: number
  /** Most events one room transaction takes. Integer >= 1. */
  readonly maxBatch: number
  /** Most room transactions in flight per persister. Integer >= 1. */
  readonly concurrency: number
  /** Extra capacity each additional parallel transaction adds, in [0, 1]. */
  readonly parallelEfficiency: number
  /** Where `txnFixedMs`, `perEventMs` and `parallelEfficiency` came from, for the report. */
  readonly source: string
}

/**
 * Built-in figures when no benchmark results exist: 2 ms per durable commit and 0.4 ms per event,
 * a deliberately conservative estimate of a persister's work (authorization, DAG linking, hashing
 * and signing, several inserts per event). The raw durable insert figures in TOOLCHAIN.md alone
 * (1.6-2.4k single-event transactions/s, 24.7k events/s in 100-row transactions) would give about
 * 0.45 ms per transaction and 0.04 ms per event; run the benchmarks to replace these.
 */
export const builtInCalibration = Object.freeze({ txnFixedMs: 2, perEventMs: 0.4, parallelEfficiency: 0.25 })

export const defaultMaxBatch = 100
export const defaultConcurrency = 4

/** `scripts/bench/results.json` of this checkout. */
export const defaultCalibrationPath = fileURLToPath(new URL('../../scripts/bench/results.json', import.meta.url))

export interface Calibration {
  readonly txnFixedMs: number
  readonly perEventMs: number
  readonly parallelEfficiency: number
  readonly source: string
}

/**
 * Reads `{"persister": {"txn_fixed_ms": number, "per_event_ms": number, "parallel_efficiency"?: number}}`
 * from a benchmark results file. A missing file or one without those figures gives the built-in
 * calibration (its `source` says why) unless `required`, when it throws an Error saying what is wrong.
 */
export function readCalibration(
  path: string = defaultCalibrationPath,
  options: { required?: boolean; readFile?: (path: string) => string } = {},
): Calibration {
  const readFile = options.readFile ?? ((file: string) => readFileSync(file, 'utf8'))
  let problem: string
  try {
    const parsed: unknown = JSON.parse(readFile(path))
    const persister = (parsed as { persister?: Record<string, unknown> } | null)?.persister
    const fixed = persister?.txn_fixed_ms
    const perEvent = persister?.per_event_ms
    const efficiency = persister?.parallel_efficiency ?? builtInCalibration.parallelEfficiency
    if (isPositive(fixed) && isNonNegative(perEvent) && isNonNegative(efficiency) && efficiency <= 1) {
      return { txnFixedMs: fixed, perEventMs: perEvent, parallelEfficiency: efficiency, source: path }
    }
    problem = 'has no valid persister.txn_fixed_ms / persister.per_event_ms'
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    problem = code === 'ENOENT' ? 'does not exist' : `is unreadable (${(err as Error).message})`
  }
  if (options.required) throw new Error(`calibration file ${path} ${problem}`)
  return {
    ...builtInCalibration,
    source: `built-in defaults (2 ms/txn + 0.4 ms/event, conservative; ${displayPath(path)} ${problem})`,
  }
}

/** Solo work of one transaction of `batch` events, in ms. */
export function transactionWorkMs(model: ServiceModel, batch: number): number {
  return model.txnFixedMs + model.perEventMs * batch
}

/** Solo-ms of work completed per ms with `active` transactions in flight (0 when idle). */
export function parallelCapacity(model: ServiceModel, active: number): number {
  if (active <= 0) return 0
  return 1 + (Math.min(active, model.concurrency) - 1) * model.parallelEfficiency
}

/** Highest sustainable events/s of one persister: every slot busy with full batches. */
export function maxThroughputPerS(model: ServiceModel): number {
  return (parallelCapacity(model, model.concurrency) * model.maxBatch * 1000) / transactionWorkMs(model, model.maxBatch)
}

/** Highest events/s of one room: one transaction at a time, full batches, nothing else running. */
export function roomMaxThroughputPerS(model: ServiceModel): number {
  return (model.maxBatch * 1000) / transactionWorkMs(model, model.maxBatch)
}

function isPositive(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value) && value > 0
}

function isNonNegative(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0
}

function displayPath(path: string): string {
  return path === defaultCalibrationPath ? 'scripts/bench/results.json' : path
}
