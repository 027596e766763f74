import type { MovedChange } from './moved.js'
import type { DelaySummary, RoomResult, SimulationResult } from './simulate.js'

/** Rooms listed in the terminal report (the JSON has up to 10 plus pinned rooms). */
const terminalRooms = 5

/** The result as pretty JSON with a trailing newline; stable for a given result. */
export function formatJson(result: SimulationResult): string {
  return `${JSON.stringify(result, null, 2)}\n`
}

/**
 * The result as plain-text tables for a terminal (no colours, ASCII-safe apart from arrows).
 *
 * @example
 * process.stdout.write(formatReport(runSimulation({ durationS: 5 })))
 */
export function formatReport(result: SimulationResult): string {
  const { workload, topology, model } = result
  const lines: string[] = []
  const arrival =
    workload.burstiness === 0
      ? 'Poisson'
      : `bursty ${workload.burstiness} (×${fmt(1 + workload.burstiness, 2)} / ×${fmt(1 - workload.burstiness, 2)} phases of ~${workload.burstPeriodS} s)`
  const pins = Object.entries(topology.pins)
  lines.push(`Myelin sharding simulation (seed ${result.seed})`)
  lines.push(`  workload   ${workload.description}; ${int(workload.ratePerS)} events/s for ${workload.durationS} s, ${arrival}; ${int(workload.events)} events`)
  lines.push(
    `  topology   ${topology.persisters} persister${topology.persisters === 1 ? '' : 's'}, ${topology.strategy}, ${
      pins.length === 0 ? 'no pins' : `pins ${pins.map(([room, writer]) => `${room}=${writer}`).join(', ')}`
    }`,
  )
  lines.push(
    `  model      ${num(model.txnFixedMs)} ms/txn + ${num(model.perEventMs)} ms/event, batch <= ${model.maxBatch}, ` +
      `${model.concurrency} txns in parallel at ${pct(model.parallelEfficiency, 0)} efficiency`,
  )
  lines.push(`             max ${int(model.persisterMaxEventsPerS)} events/s per persister, ${int(model.roomMaxEventsPerS)} events/s for one room (full batches)`)
  lines.push(`  calibration ${model.source}`)
  lines.push('')

  lines.push('Per persister')
  lines.push(
    ...table(
      ['persister', 'rooms', 'events', 'share', 'txns', 'batch', 'util', 'busy', 'queue avg', 'max', 'delay p50', 'p99', 'latency p50', 'p99', 'max'],
      result.persisters.map((p) => [
        p.name,
        int(p.rooms),
        int(p.events),
        pct(p.share),
        int(p.transactions),
        fmt(p.meanBatch, 2),
        pct(p.utilisation),
        pct(p.busyFraction),
        fmt(p.meanQueueDepth, 2),
        int(p.maxQueueDepth),
        ms(p.queueDelayMs.p50),
        ms(p.queueDelayMs.p99),
        ms(p.latencyMs.p50),
        ms(p.latencyMs.p99),
        ms(p.latencyMs.max),
      ]),
    ),
  )
  lines.push('')

  lines.push('Events (ms)')
  const row = (name: string, d: DelaySummary): string[] => [name, ms(d.p50), ms(d.p90), ms(d.p99), ms(d.max), ms(d.mean)]
  lines.push(
    ...table(
      ['', 'p50', 'p90', 'p99', 'max', 'mean'],
      [
        row('queueing delay (arrival to txn start)', result.events.queueDelayMs),
        row('commit latency (arrival to commit)', result.events.latencyMs),
        row('linear-position lag (commit to in-order)', result.events.linearLagMs),
      ],
    ),
  )
  lines.push(`  largest gap between the fastest writer and the linear position: ${int(result.events.maxPositionGap)} stream IDs`)
  lines.push('')

  const hot = result.hottestRoom
  lines.push(
    `Hottest room ${hot.roomId} on ${hot.owner}${hot.pinned ? ' (pinned)' : ''}: ${pct(hot.share)} of events ` +
      `(workload ${pct(hot.expectedShare)}), latency p50 ${ms(hot.latencyMs.p50)} p99 ${ms(hot.latencyMs.p99)} max ${ms(hot.latencyMs.max)} ms`,
  )
  const listed = result.rooms.filter((room, i) => i < terminalRooms || room.pinned)
  lines.push(
    ...table(
      ['room', 'owner', 'events', 'share', 'delay p50', 'p99', 'latency p50', 'p99', 'max'],
      listed.map((room: RoomResult) => [
        `${room.roomId}${room.pinned ? ' (pinned)' : ''}`,
        room.owner,
        int(room.events),
        pct(room.share),
        ms(room.queueDelayMs.p50),
        ms(room.queueDelayMs.p99),
        ms(room.latencyMs.p50),
        ms(room.latencyMs.p99),
        ms(room.latencyMs.max),
      ]),
    ),
  )
  lines.push(`  worst room by max latency: ${result.worstRoom.roomId} on ${result.worstRoom.owner}, ${ms(result.worstRoom.maxLatencyMs)} ms`)
  lines.push('')

  const changes: MovedChange[] = [result.moved.add, ...(result.moved.remove ? [result.moved.remove] : [])]
  lines.push(`Rooms moved when persisters change (of ${int(result.moved.rooms)} rooms; traffic = share of events in moved rooms)`)
  lines.push(
    ...table(
      ['strategy', ...changes.flatMap((c) => [`${c.from} -> ${c.to} rooms`, 'traffic', 'expected'])],
      (result.moved.add.strategies ?? []).map((s, i) => [
        s.strategy,
        ...changes.flatMap((c) => {
          const m = c.strategies[i]
          return m ? [pct(m.fraction), pct(m.trafficFraction), pct(m.expectedFraction)] : ['', '', '']
        }),
      ]),
    ),
  )
  if (result.moved.remove) lines.push(`  removing takes away ${result.moved.remove.removed}; pins to it are dropped`)
  else lines.push('  (no removal with a single persister)')

  const warnings = overloadWarnings(result)
  if (warnings.length > 0) lines.push('', ...warnings.map((w) => `warning: ${w}`))
  return `${lines.join('\n')}\n`
}

/** Human warnings about overload; empty when the run was stable. */
export function overloadWarnings(result: SimulationResult): string[] {
  const warnings: string[] = []
  const durationMs = result.workload.durationS * 1000
  if (result.drainMs > Math.max(1000, durationMs * 0.01)) {
    warnings.push(
      `queues took ${fmt(result.drainMs / 1000, 1)} s to drain after arrivals stopped: the load exceeds capacity and ` +
        'latencies grow with the duration',
    )
  }
  const saturated = result.persisters.filter((p) => p.busyFraction > 0.98).map((p) => p.name)
  if (saturated.length > 0) warnings.push(`always busy: ${saturated.join(', ')}`)
  const hot = result.hottestRoom
  const hotRatePerS = hot.events / result.workload.durationS
  if (hotRatePerS > 0.8 * result.model.roomMaxEventsPerS) {
    warnings.push(
      `${hot.roomId} receives ${int(hotRatePerS)} events/s, near the single-room limit of ${int(result.model.roomMaxEventsPerS)} ` +
        'events/s (one transaction at a time): only a dedicated persister, cheaper transactions or larger batches help it',
    )
  }
  return warnings
}

/** Left-aligned first column, right-aligned others, two spaces between columns, indented by two. */
function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => (r[c] ?? '').length)))
  const render = (cells: string[]): string =>
    `  ${cells.map((cell, c) => (c === 0 ? cell.padEnd(widths[c] as number) : cell.padStart(widths[c] as number))).join('  ')}`.trimEnd()
  return [render(header), render(widths.map((w) => '-'.repeat(w))), ...rows.map(render)]
}

function int(value: number): string {
  return Math.round(value).toLocaleString('en-US')
}

function fmt(value: number, digits: number): string {
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
}

/** Up to 4 significant digits, no trailing zeros. */
function num(value: number): string {
  return Number(value.toPrecision(4)).toLocaleString('en-US', { maximumFractionDigits: 6 })
}

function pct(value: number, digits = 1): string {
  return `${fmt(value * 100, digits)}%`
}

/** Milliseconds with precision that suits the magnitude. */
function ms(value: number): string {
  if (value < 10) return fmt(value, 2)
  if (value < 1000) return fmt(value, 1)
  return int(value)
}
