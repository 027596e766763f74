import { Gauge, type Registry } from 'prom-client'
import type { Bus } from '../storage/bus/bus.js'
import type { MultiWriterIdGenerator } from '../storage/streams/id-generator.js'
import type { StreamTracker } from '../storage/streams/stream-tracker.js'

/**
 * Gauges read at scrape time from a process's live components:
 * - `myelin_bus_up{transport}`: 1 while the replication bus is connected;
 * - `myelin_writer_position{stream,writer}`: this process's own advertised position per stream it writes;
 * - `myelin_stream_position{stream,writer}`: every writer's position as this process's tracker knows it;
 * - `myelin_stream_linear_position{stream}`: the tracker's linear position (everything at or below is finished);
 * - `myelin_replication_lag_ids{stream}`: the fastest known writer's position minus the linear
 *   position — how far in-order readers of this process trail the newest event.
 *
 * @example
 * registerProcessGauges(registry, { bus, generators: [events, backfill], tracker })
 */
export function registerProcessGauges(
  registry: Registry,
  parts: { bus: Bus; generators: readonly MultiWriterIdGenerator[]; tracker: StreamTracker | undefined },
): void {
  const registers = [registry]
  new Gauge({
    name: 'myelin_bus_up',
    help: '1 while the replication bus is connected, else 0',
    labelNames: ['transport'] as const,
    registers,
    collect() {
      this.set({ transport: parts.bus.transport }, parts.bus.state === 'up' ? 1 : 0)
    },
  })
  new Gauge({
    name: 'myelin_writer_position',
    help: "This writer's advertised stream position",
    labelNames: ['stream', 'writer'] as const,
    registers,
    collect() {
      for (const g of parts.generators) this.set({ stream: g.stream, writer: g.writer }, Number(g.position()))
    },
  })
  const { tracker } = parts
  if (tracker === undefined) return
  new Gauge({
    name: 'myelin_stream_position',
    help: "Each writer's events-stream position as this process's tracker knows it",
    labelNames: ['stream', 'writer'] as const,
    registers,
    collect() {
      for (const [writer, position] of tracker.positions()) this.set({ stream: 'events', writer }, Number(position))
    },
  })
  new Gauge({
    name: 'myelin_stream_linear_position',
    help: "The tracker's linear events-stream position",
    labelNames: ['stream'] as const,
    registers,
    collect() {
      this.set({ stream: 'events' }, Number(tracker.linearPosition()))
    },
  })
  new Gauge({
    name: 'myelin_replication_lag_ids',
    help: 'Fastest known writer position minus the linear position (stream IDs in-order readers still wait for)',
    labelNames: ['stream'] as const,
    registers,
    collect() {
      let max = tracker.linearPosition()
      for (const position of tracker.positions().values()) if (position > max) max = position
      this.set({ stream: 'events' }, Number(max - tracker.linearPosition()))
    },
  })
}
