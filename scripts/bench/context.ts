/**
 * What `scripts/bench/run.ts` hands every benchmark module, and what a module returns. A module
 * is a file exporting `run(ctx: BenchContext): Promise<BenchResult[]>`; run.ts prints each
 * result as one JSON line on stdout (progress goes to stderr through `ctx.progress`).
 */
export interface BenchContext {
  /** Superuser URL of the benchmark PostgreSQL (any database; `postgres` by default). */
  readonly adminUrl: string
  readonly redisUrl: string
  /** A short smoke run: tiny configurations, one repetition, short measurements. */
  readonly quick: boolean
  /** Repetitions of every measurement (medians are reported); 3 unless `--repeats`. */
  readonly repeats: number
  /** Events preloaded for the "many events stored" side of the stored-events benchmark (`--stored`). */
  readonly stored: number
  /** Writes one progress line to stderr. */
  readonly progress: (line: string) => void
}

/**
 * One result line. Every benchmark measures a baseline in the same run; `ratio` compares the
 * measurement with it (each result says what the ratio means in `ratioMeaning`).
 */
export interface BenchResult {
  readonly benchmark: string
  readonly ratio: number
}

/** The shape of a benchmark module. */
export interface BenchModule {
  run(ctx: BenchContext): Promise<readonly BenchResult[]>
}
