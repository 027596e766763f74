import type { SimulationResult } from './simulate.js'

/**
 * Charts of a simulation as one standalone SVG document (no scripts, no external resources):
 * 1. load per persister: events (left axis) and utilisation (right axis) as grouped bars;
 * 2. latency distribution: cumulative fraction of events against queueing delay, commit latency
 *    and linear-position lag (ms, linear axis up to the largest p99.9);
 * 3. rooms moved per strategy when a persister is added or removed, with the expected fraction
 *    marked.
 *
 * @example
 * writeFileSync('sim.svg', renderSvg(runSimulation({ durationS: 10 })))
 */
export function renderSvg(result: SimulationResult): string {
  const parts: string[] = []
  const title = `Myelin sharding simulation (seed ${result.seed})`
  const pins = Object.keys(result.topology.pins).length
  const subtitle =
    `${result.workload.description}; ${result.workload.ratePerS.toLocaleString('en-US')} events/s for ${result.workload.durationS} s; ` +
    `${result.topology.persisters} persisters, ${result.topology.strategy}${pins > 0 ? `, ${pins} pinned room${pins > 1 ? 's' : ''}` : ''}`
  parts.push(text(width / 2, 28, title, { size: 17, anchor: 'middle', weight: 'bold' }))
  parts.push(text(width / 2, 48, subtitle, { size: 12, anchor: 'middle' }))
  parts.push(text(width / 2, 66, `calibration: ${result.model.source}`, { size: 11, anchor: 'middle', fill: '#555' }))
  parts.push(loadChart(result, headerHeight))
  parts.push(latencyChart(result, headerHeight + panelHeight))
  parts.push(movedChart(result, headerHeight + 2 * panelHeight))
  const height = headerHeight + 3 * panelHeight
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif">`,
    `<title>${escapeXml(title)}</title>`,
    `<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`,
    ...parts,
    '</svg>',
    '',
  ].join('\n')
}

const width = 960
const headerHeight = 80
const panelHeight = 360
const margin = { left: 80, right: 80, top: 44, bottom: 70 }
const colors = {
  events: '#4e79a7',
  utilisation: '#f28e2b',
  queueDelay: '#4e79a7',
  latency: '#e15759',
  lag: '#59a14f',
  rendezvous: '#4e79a7',
  modulo: '#e15759',
  grid: '#e3e3e3',
  axis: '#333333',
}

interface Plot {
  x0: number
  x1: number
  y0: number
  y1: number
}

function plotArea(top: number): Plot {
  return { x0: margin.left, x1: width - margin.right, y0: top + margin.top, y1: top + panelHeight - margin.bottom }
}

function loadChart(result: SimulationResult, top: number): string {
  const area = plotArea(top)
  const parts = [panelTitle(top, 'Load per persister')]
  const persisters = result.persisters
  const maxEvents = Math.max(1, ...persisters.map((p) => p.events))
  const eventTicks = niceTicks(maxEvents)
  const eventMax = eventTicks[eventTicks.length - 1] as number
  parts.push(yAxis(area, eventTicks, eventMax, (v) => compact(v), 'left', 'events persisted'))
  const utilTicks = [0, 0.25, 0.5, 0.75, 1]
  parts.push(yAxis(area, utilTicks, 1, (v) => `${Math.round(v * 100)}%`, 'right', 'utilisation'))
  const slot = (area.x1 - area.x0) / persisters.length
  const barWidth = Math.min(36, (slot * 0.8) / 2)
  persisters.forEach((p, i) => {
    const center = area.x0 + slot * (i + 0.5)
    const eventsHeight = ((area.y1 - area.y0) * p.events) / eventMax
    const utilHeight = (area.y1 - area.y0) * p.utilisation
    parts.push(rect(center - barWidth, area.y1 - eventsHeight, barWidth, eventsHeight, colors.events, `${p.name}: ${p.events} events`))
    parts.push(rect(center, area.y1 - utilHeight, barWidth, utilHeight, colors.utilisation, `${p.name}: utilisation ${(p.utilisation * 100).toFixed(1)}%`))
    if (persisters.length <= 16) {
      parts.push(text(center - barWidth / 2, area.y1 - eventsHeight - 4, compact(p.events), { size: 10, anchor: 'middle' }))
      parts.push(text(center + barWidth / 2, area.y1 - utilHeight - 4, `${Math.round(p.utilisation * 100)}%`, { size: 10, anchor: 'middle' }))
    }
    const every = Math.ceil(persisters.length / 16)
    if (i % every === 0) parts.push(text(center, area.y1 + 16, p.name, { size: 11, anchor: 'middle' }))
  })
  parts.push(xAxisLine(area))
  parts.push(
    legend(area.x0, top + panelHeight - 28, [
      { label: 'events persisted (left axis)', color: colors.events },
      { label: 'utilisation of parallel capacity (right axis)', color: colors.utilisation },
    ]),
  )
  return group('load-per-persister', parts)
}

function latencyChart(result: SimulationResult, top: number): string {
  const area = plotArea(top)
  const parts = [panelTitle(top, 'Latency distribution (cumulative share of events)')]
  const { cdf } = result
  const series = [
    { label: 'queueing delay', values: cdf.queueDelayMs, max: result.events.queueDelayMs.max, color: colors.queueDelay },
    { label: 'commit latency', values: cdf.latencyMs, max: result.events.latencyMs.max, color: colors.latency },
    { label: 'linear-position lag', values: cdf.linearLagMs, max: result.events.linearLagMs.max, color: colors.lag },
  ]
  const p999 = cdf.quantiles.indexOf(0.999)
  const xLimit = Math.max(0.001, ...series.map((s) => s.values[p999 >= 0 ? p999 : s.values.length - 1] ?? 0))
  const xTicks = niceTicks(xLimit)
  const xMax = xTicks[xTicks.length - 1] as number
  parts.push(yAxis(area, [0, 0.25, 0.5, 0.75, 0.9, 1], 1, (v) => `${Math.round(v * 1000) / 10}%`, 'left', 'share of events at or below'))
  const scaleX = (v: number): number => area.x0 + ((area.x1 - area.x0) * Math.min(v, xMax)) / xMax
  const scaleY = (q: number): number => area.y1 - (area.y1 - area.y0) * q
  for (const tick of xTicks) {
    const x = scaleX(tick)
    parts.push(line(x, area.y0, x, area.y1, colors.grid))
    parts.push(text(x, area.y1 + 16, formatMs(tick), { size: 11, anchor: 'middle' }))
  }
  parts.push(text((area.x0 + area.x1) / 2, area.y1 + 34, 'milliseconds (axis ends at the largest p99.9; maxima in the legend)', { size: 12, anchor: 'middle' }))
  for (const s of series) {
    // A step function: the share of events at or below x jumps at each quantile value.
    const points: string[] = []
    let previousQ = 0
    cdf.quantiles.forEach((q, i) => {
      const x = scaleX(s.values[i] ?? 0)
      points.push(`${r(x)},${r(scaleY(previousQ))}`, `${r(x)},${r(scaleY(q))}`)
      previousQ = q
    })
    points.push(`${r(area.x1)},${r(scaleY(1))}`)
    parts.push(`<polyline points="${points.join(' ')}" fill="none" stroke="${s.color}" stroke-width="2"><title>${escapeXml(s.label)}</title></polyline>`)
  }
  parts.push(xAxisLine(area))
  parts.push(
    legend(
      area.x0,
      top + panelHeight - 20,
      series.map((s) => ({ label: `${s.label} (max ${formatMs(s.max)} ms)`, color: s.color })),
    ),
  )
  return group('latency-distribution', parts)
}

function movedChart(result: SimulationResult, top: number): string {
  const area = plotArea(top)
  const parts = [panelTitle(top, `Rooms moved when persisters change (of ${result.moved.rooms.toLocaleString('en-US')} rooms)`)]
  const changes = [result.moved.add, ...(result.moved.remove ? [result.moved.remove] : [])]
  parts.push(yAxis(area, [0, 0.25, 0.5, 0.75, 1], 1, (v) => `${Math.round(v * 100)}%`, 'left', 'share of rooms moved'))
  const slot = (area.x1 - area.x0) / changes.length
  const strategies = result.moved.add.strategies.map((s) => s.strategy)
  const barWidth = Math.min(90, (slot * 0.6) / strategies.length)
  changes.forEach((change, c) => {
    const center = area.x0 + slot * (c + 0.5)
    change.strategies.forEach((m, i) => {
      const x = center + (i - strategies.length / 2) * barWidth
      const h = (area.y1 - area.y0) * m.fraction
      const color = m.strategy === 'modulo' ? colors.modulo : colors.rendezvous
      parts.push(rect(x + 4, area.y1 - h, barWidth - 8, h, color, `${m.strategy}: ${(m.fraction * 100).toFixed(1)}% of rooms moved`))
      parts.push(text(x + barWidth / 2, area.y1 - h - 6, `${(m.fraction * 100).toFixed(1)}%`, { size: 11, anchor: 'middle' }))
      const ey = area.y1 - (area.y1 - area.y0) * m.expectedFraction
      parts.push(`<line x1="${r(x + 2)}" y1="${r(ey)}" x2="${r(x + barWidth - 2)}" y2="${r(ey)}" stroke="#000" stroke-width="1.5" stroke-dasharray="4 3"/>`)
    })
    const label = change.removed ? `remove ${change.removed}: ${change.from} → ${change.to} persisters` : `add a persister: ${change.from} → ${change.to}`
    parts.push(text(center, area.y1 + 18, label, { size: 12, anchor: 'middle' }))
  })
  parts.push(xAxisLine(area))
  parts.push(
    legend(area.x0, top + panelHeight - 24, [
      ...strategies.map((s) => ({ label: s, color: s === 'modulo' ? colors.modulo : colors.rendezvous })),
      { label: 'expected for uniform hashing', color: '#000', dashed: true },
    ]),
  )
  return group('moved-rooms', parts)
}

function panelTitle(top: number, title: string): string {
  return text(width / 2, top + 24, title, { size: 14, anchor: 'middle', weight: 'bold' })
}

function yAxis(area: Plot, ticks: number[], max: number, label: (v: number) => string, side: 'left' | 'right', name: string): string {
  const parts: string[] = []
  const x = side === 'left' ? area.x0 : area.x1
  parts.push(line(x, area.y0, x, area.y1, colors.axis))
  for (const tick of ticks) {
    const y = area.y1 - ((area.y1 - area.y0) * tick) / max
    if (side === 'left') parts.push(line(area.x0, y, area.x1, y, colors.grid))
    parts.push(line(side === 'left' ? x - 4 : x, y, side === 'left' ? x : x + 4, y, colors.axis))
    parts.push(text(side === 'left' ? x - 7 : x + 7, y + 4, label(tick), { size: 11, anchor: side === 'left' ? 'end' : 'start' }))
  }
  const cx = side === 'left' ? area.x0 - 58 : area.x1 + 58
  const cy = (area.y0 + area.y1) / 2
  parts.push(`<text x="${r(cx)}" y="${r(cy)}" font-size="12" text-anchor="middle" transform="rotate(-90 ${r(cx)} ${r(cy)})">${escapeXml(name)}</text>`)
  return parts.join('\n')
}

function xAxisLine(area: Plot): string {
  return line(area.x0, area.y1, area.x1, area.y1, colors.axis)
}

function legend(x: number, y: number, items: Array<{ label: string; color: string; dashed?: boolean }>): string {
  const parts: string[] = []
  let cursor = x
  for (const item of items) {
    parts.push(
      item.dashed
        ? `<line x1="${r(cursor)}" y1="${r(y - 4)}" x2="${r(cursor + 14)}" y2="${r(y - 4)}" stroke="${item.color}" stroke-width="1.5" stroke-dasharray="4 3"/>`
        : `<rect x="${r(cursor)}" y="${r(y - 10)}" width="14" height="12" fill="${item.color}"/>`,
    )
    parts.push(text(cursor + 20, y, item.label, { size: 12 }))
    cursor += 20 + item.label.length * 6.6 + 24
  }
  return `<g class="legend">\n${parts.join('\n')}\n</g>`
}

function group(id: string, parts: string[]): string {
  return `<g id="${id}">\n${parts.join('\n')}\n</g>`
}

function rect(x: number, y: number, w: number, h: number, fill: string, tooltip: string): string {
  return `<rect x="${r(x)}" y="${r(y)}" width="${r(Math.max(0, w))}" height="${r(Math.max(0, h))}" fill="${fill}"><title>${escapeXml(tooltip)}</title></rect>`
}

function line(x1: number, y1: number, x2: number, y2: number, stroke: string): string {
  return `<line x1="${r(x1)}" y1="${r(y1)}" x2="${r(x2)}" y2="${r(y2)}" stroke="${stroke}" stroke-width="1"/>`
}

function text(
  x: number,
  y: number,
  content: string,
  style: { size: number; anchor?: 'start' | 'middle' | 'end'; weight?: 'bold'; fill?: string },
): string {
  const attrs = [
    `x="${r(x)}"`,
    `y="${r(y)}"`,
    `font-size="${style.size}"`,
    style.anchor && style.anchor !== 'start' ? `text-anchor="${style.anchor}"` : '',
    style.weight ? `font-weight="${style.weight}"` : '',
    `fill="${style.fill ?? '#222'}"`,
  ].filter(Boolean)
  return `<text ${attrs.join(' ')}>${escapeXml(content)}</text>`
}

/** Round tick values covering [0, max]: 4 to 6 steps of 1, 2 or 5 × 10^k. */
export function niceTicks(max: number): number[] {
  const target = max > 0 ? max : 1
  const raw = target / 5
  const magnitude = 10 ** Math.floor(Math.log10(raw))
  const step = ([1, 2, 5, 10].find((m) => m * magnitude >= raw) ?? 10) * magnitude
  const ticks: number[] = []
  for (let k = 0; ; k++) {
    const value = Number((k * step).toPrecision(12))
    ticks.push(value)
    if (value >= target) break
  }
  return ticks
}

export function escapeXml(value: string): string {
  return value.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c] as string)
}

function compact(value: number): string {
  if (value >= 1e6) return `${Number((value / 1e6).toPrecision(3))}M`
  if (value >= 1e3) return `${Number((value / 1e3).toPrecision(3))}k`
  return `${Number(value.toPrecision(3))}`
}

function formatMs(value: number): string {
  if (value >= 1000) return Math.round(value).toLocaleString('en-US')
  return `${Number(value.toPrecision(3))}`
}

function r(value: number): string {
  return (Math.round(value * 10) / 10).toString()
}
