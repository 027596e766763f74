import { Counter, Gauge, Histogram } from 'prom-client'
import type { Registry } from 'prom-client'

/** Whether a batch persisted live events (events stream) or imported history (backfill stream). */
export type BatchKind = 'live' | 'import'

/** How a live group committed: one guarded statement, or a transaction (see `persistBatchesAtOnce`). */
export type CommitPath = 'statement' | 'transaction'

/** What the persister reports per batch. */
export interface PersisterMetrics {
  /** A batch finished (committed or failed) after `seconds`; `stored` new events were committed. */
  batch(kind: BatchKind, events: number, stored: number, seconds: number, ok: boolean): void
  /** A live transaction committed the batches of `rooms` rooms, `events` events in all, by `path`. */
  group(rooms: number, events: number, path: CommitPath): void
}

/**
 * Registers the persister's metrics on `registry` (none registered without one: the numbers are
 * then only kept in unregistered objects):
 * - `myelin_events_persisted_total{writer,kind}`: new events committed;
 * - `myelin_persist_batch_size{writer,kind}`: events per batch (deduplicated ones included);
 * - `myelin_persist_duration_seconds{writer,kind,outcome}`: batch transaction time, commit and
 *   position publication included;
 * - `myelin_persist_group_rooms{writer}` and `myelin_persist_transaction_events{writer}`: rooms
 *   and events per live transaction (group commit, `CommitGroups`);
 * - `myelin_persist_commits_total{writer,path}`: live commits by path, `statement` (one guarded
 *   statement on cached snapshots) or `transaction` (cache missed, new room, redaction, refusal,
 *   retry);
 * - `myelin_room_queue_depth{writer}`: requests waiting in room queues, read at scrape time;
 * - `myelin_persist_groups_waiting{writer}`: room batches waiting for a transaction, at scrape time.
 *
 * @example
 * const registry = new Registry()
 * const metrics = createPersisterMetrics({ registry, writer: 'persister1', queueDepth: () => queue.pendingItems, groupsWaiting: () => groups.waiting })
 * metrics.batch('live', 100, 100, 0.012, true)
 */
export function createPersisterMetrics(options: {
  readonly registry?: Registry
  readonly writer: string
  readonly queueDepth: () => number
  readonly groupsWaiting: () => number
}): PersisterMetrics {
  const registers = options.registry === undefined ? [] : [options.registry]
  const persisted = new Counter({
    name: 'myelin_events_persisted_total',
    help: 'New events committed by this persister',
    labelNames: ['writer', 'kind'] as const,
    registers,
  })
  const batchSize = new Histogram({
    name: 'myelin_persist_batch_size',
    help: 'Events per persist batch',
    labelNames: ['writer', 'kind'] as const,
    buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
    registers,
  })
  const duration = new Histogram({
    name: 'myelin_persist_duration_seconds',
    help: 'Duration of a persist batch transaction, commit and position publication included',
    labelNames: ['writer', 'kind', 'outcome'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers,
  })
  const groupRooms = new Histogram({
    name: 'myelin_persist_group_rooms',
    help: 'Rooms whose batches one live persist transaction committed',
    labelNames: ['writer'] as const,
    buckets: [1, 2, 4, 8, 16, 32, 64],
    registers,
  })
  const transactionEvents = new Histogram({
    name: 'myelin_persist_transaction_events',
    help: 'Events per live persist transaction, over all its rooms',
    labelNames: ['writer'] as const,
    buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
    registers,
  })
  const commits = new Counter({
    name: 'myelin_persist_commits_total',
    help: 'Live persist commits by path: one guarded statement, or a transaction',
    labelNames: ['writer', 'path'] as const,
    registers,
  })
  const { writer, queueDepth, groupsWaiting } = options
  new Gauge({
    name: 'myelin_persist_groups_waiting',
    help: 'Room batches waiting for a live persist transaction',
    labelNames: ['writer'] as const,
    registers,
    collect() {
      this.set({ writer }, groupsWaiting())
    },
  })
  new Gauge({
    name: 'myelin_room_queue_depth',
    help: 'Persist and import requests waiting in room queues',
    labelNames: ['writer'] as const,
    registers,
    collect() {
      this.set({ writer }, queueDepth())
    },
  })
  return {
    batch(kind, events, stored, seconds, ok) {
      if (stored > 0) persisted.inc({ writer, kind }, stored)
      batchSize.observe({ writer, kind }, events)
      duration.observe({ writer, kind, outcome: ok ? 'ok' : 'error' }, seconds)
    },
    group(rooms, events, path) {
      groupRooms.observe({ writer }, rooms)
      transactionEvents.observe({ writer }, events)
      commits.inc({ writer, path })
    },
  }
}
