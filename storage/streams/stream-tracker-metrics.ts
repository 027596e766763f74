import { Counter, Gauge, type Registry } from 'prom-client'
import type { MultiWriterStream } from './stream-sequence.js'

/** Why a stream tracker read `stream_positions`. */
export type CatchUpReason = 'start' | 'reconnect' | 'gap' | 'poll' | 'refresh'

/** What a stream tracker reports. */
export interface StreamTrackerMetrics {
  polling(stream: MultiWriterStream, polling: boolean): void
  catchUp(stream: MultiWriterStream, reason: CatchUpReason): void
}

/**
 * The stream trackers' metrics, registered on `registry` when given (several trackers, one per
 * stream, share them through the `stream` label):
 * - `myelin_stream_tracker_polling{stream}`: 1 while the bus is down and the tracker polls
 *   `stream_positions`, else 0;
 * - `myelin_stream_tracker_catch_ups_total{stream,reason}`: reads of `stream_positions`.
 *
 * @example
 * const metrics = createStreamTrackerMetrics(registry)
 * metrics.polling('events', true)
 */
export function createStreamTrackerMetrics(registry?: Registry): StreamTrackerMetrics {
  const registers = registry === undefined ? [] : [registry]
  const polling =
    (registry?.getSingleMetric('myelin_stream_tracker_polling') as Gauge<'stream'> | undefined) ??
    new Gauge({
      name: 'myelin_stream_tracker_polling',
      help: '1 while the bus is down and the stream tracker polls stream_positions',
      labelNames: ['stream'] as const,
      registers,
    })
  const catchUps =
    (registry?.getSingleMetric('myelin_stream_tracker_catch_ups_total') as Counter<'stream' | 'reason'> | undefined) ??
    new Counter({
      name: 'myelin_stream_tracker_catch_ups_total',
      help: 'Reads of stream_positions by the stream tracker, by reason',
      labelNames: ['stream', 'reason'] as const,
      registers,
    })
  return {
    polling: (stream, on) => polling.set({ stream }, on ? 1 : 0),
    catchUp: (stream, reason) => catchUps.inc({ stream, reason }),
  }
}
