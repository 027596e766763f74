import { Counter, Gauge, type Registry } from 'prom-client'
import type { Kysely } from 'kysely'
import type { Logger } from '../storage/logger.js'
import type { Database } from '../storage/schema.js'
import { indexForSearch } from '../storage/search.js'
import type { MultiWriterStream } from '../storage/streams/stream-sequence.js'
import type { StreamTracker } from '../storage/streams/stream-tracker.js'
import { spacedPasses } from './spaced-passes.js'

/**
 * Fills the search index (storage/search.ts `indexForSearch`) behind the events stream and, with
 * a `backfill` tracker, behind the history imported into rooms' past, on the process that runs
 * the background tasks: woken by the trackers' advances, it indexes every event up to each
 * stream's linear position (all committed), a batch per statement. Passes start at most every
 * `spacingMs`, so a busy stream is indexed in batches, not one transaction at a time.
 *
 * A deployment that starts with history to index (the migration's position is 0) catches up
 * batch after batch, resting between batches as long as each took, and says how far it got
 * every 10 s.
 */

export interface SearchIndexer {
  /** Indexes everything up to the linear position as of the call; resolves when done. */
  runOnce(): Promise<void>
  close(): Promise<void>
}

/** Stream IDs read per statement (so at most as many events). */
const batchSize = 2000
/** Time between catch-up progress lines. */
const progressEveryMs = 10_000

export function startSearchIndexer(options: {
  db: Kysely<Database>
  /** The events stream's tracker. */
  tracker: Pick<StreamTracker, 'linearPosition' | 'onAdvance'>
  /** The backfill stream's tracker: imported history is indexed only with one. */
  backfill?: Pick<StreamTracker, 'linearPosition' | 'onAdvance'>
  log: Logger
  registry?: Registry
  /** Least time between the starts of two passes (default 200 ms). */
  spacingMs?: number
  /** Passes even without advances: a retry after a failure, the catch-up at start (default 5 s). */
  tickMs?: number
  /** Stream IDs read per statement, so at most as many events (default 2,000). */
  batchSize?: number
}): SearchIndexer {
  const { db, tracker } = options
  const log = options.log.child({ component: 'search-indexer' })
  const spacingMs = options.spacingMs ?? 200
  const registers = options.registry ? [options.registry] : []
  const written = new Counter({ name: 'myelin_search_indexed_total', help: 'Search index entries written (indexed) and dropped for redactions (removed)', labelNames: ['change'], registers })
  const lag = new Gauge({ name: 'myelin_search_index_lag', help: 'Stream IDs between the search index position and the linear position, per stream', labelNames: ['stream'], registers })
  const followed: [MultiWriterStream, Pick<StreamTracker, 'linearPosition' | 'onAdvance'>][] = [['events', tracker]]
  if (options.backfill) followed.push(['backfill', options.backfill])

  /** How far each stream is known indexed: a pass over a stream that has not moved past it is skipped. */
  const known = new Map<MultiWriterStream, bigint>()
  let closed = false
  let lastProgress = 0

  /** Indexes each stream up to its linear position as of the pass's start. */
  async function pass(): Promise<void> {
    for (const [stream, streamTracker] of followed) await passOver(stream, streamTracker.linearPosition())
  }

  async function passOver(stream: MultiWriterStream, upTo: bigint): Promise<void> {
    if (upTo <= (known.get(stream) ?? -1n)) return
    for (;;) {
      const started = Date.now()
      const { from, reached, indexed, removed } = await indexForSearch(db, upTo, options.batchSize ?? batchSize, stream)
      written.inc({ change: 'indexed' }, indexed)
      written.inc({ change: 'removed' }, removed)
      lag.set({ stream }, Number(upTo > reached ? upTo - reached : 0n))
      if (reached > (known.get(stream) ?? -1n)) known.set(stream, reached)
      if (reached >= upTo || reached === from || closed) return
      if (Date.now() - lastProgress >= progressEveryMs) {
        lastProgress = Date.now()
        log.info({ stream, position: reached.toString(), upTo: upTo.toString() }, 'search index catching up')
      }
      // Catching up (a full batch, more behind it): rest as long as the batch took, so history
      // is indexed with at most half of one database connection's time, beside the live load.
      await new Promise((resolve) => setTimeout(resolve, Date.now() - started))
    }
  }

  // The next tick tries again from the stored position.
  const passes = spacedPasses({ spacingMs, pass, onError: (err) => log.warn({ err }, 'search indexing failed; retried later') })
  const removeListeners = followed.map(([, streamTracker]) => streamTracker.onAdvance(() => void passes.wake()))
  const tick = setInterval(() => void passes.wake(), options.tickMs ?? 5000)
  void passes.wake()

  return {
    async runOnce() {
      await passes.running()
      await passes.wake()
    },
    async close() {
      closed = true
      for (const remove of removeListeners) remove()
      clearInterval(tick)
      await passes.close()
    },
  }
}
