import { readFileSync, writeFileSync } from 'node:fs'
import cliProgress from 'cli-progress'
import { Command, InvalidArgumentError, Option } from 'commander'
import { postgresUrlPattern } from '../../storage/config.js'
import { shardStrategies } from '../shard-map.js'
import type { ShardStrategy } from '../shard-map.js'
import { defaultCalibrationPath, defaultConcurrency, defaultMaxBatch, readCalibration } from './model.js'
import type { ServiceModel } from './model.js'
import { formatJson, formatReport } from './report.js'
import { runSimulation, simulationDefaults } from './simulate.js'
import type { Distribution, SimulationResult } from './simulate.js'
import { renderSvg } from './svg.js'
import { loadTraceFromDatabase } from './trace-db.js'
import { parseTraceCsv } from './workload.js'
import type { TraceRow } from './workload.js'

/** What the command touches outside itself; tests replace parts of it. */
export interface SimulateIo {
  /** Receives the table or the JSON. */
  readonly stdout: { write(text: string): unknown }
  /** Receives the progress bar (only when `isTTY`) and notes such as where the SVG went. */
  readonly stderr: NodeJS.WritableStream & { isTTY?: boolean }
  readonly readFile: (path: string) => string
  readonly writeFile: (path: string, text: string) => void
  readonly loadTraceFromDatabase: (url: string) => Promise<TraceRow[]>
}

const defaultIo: SimulateIo = {
  stdout: process.stdout,
  stderr: process.stderr,
  readFile: (path) => readFileSync(path, 'utf8'),
  writeFile: (path, text) => writeFileSync(path, text),
  loadTraceFromDatabase,
}

interface SimulateFlags {
  rooms: number
  distribution: Distribution['kind']
  zipfExponent: number
  traceCsv?: string
  traceDb?: string
  rate: number
  duration: number
  burstiness: number
  burstPeriod: number
  persisters: number
  strategy: ShardStrategy
  pin: Record<string, string>
  txnFixedMs?: number
  perEventMs?: number
  parallelEfficiency?: number
  maxBatch: number
  concurrency: number
  calibration?: string
  seed: number
  json?: boolean
  svg?: string
  progress: boolean
}

/**
 * `myelin simulate`: the sharding simulator on the command line. Bad flags or combinations print
 * `error: …` on stderr and exit non-zero (through commander, so `exitOverride()` applies).
 *
 * @example
 * await simulateCommand().parseAsync(['--persisters', '6', '--json'], { from: 'user' })
 */
export function simulateCommand(io: Partial<SimulateIo> = {}): Command {
  const deps: SimulateIo = { ...defaultIo, ...io }
  const command = new Command('simulate')
  command
    .description(
      'Simulate how rooms spread over event persisters: per-persister load, queueing delay, ' +
        'linear-position lag and rooms moved when persisters are added or removed.',
    )
    .addOption(new Option('--rooms <n>', 'number of rooms (uniform, zipf)').default(simulationDefaults.rooms).argParser(integer('--rooms', 1)))
    .addOption(
      new Option('--distribution <kind>', 'room activity distribution').choices(['uniform', 'zipf', 'trace']).default('zipf'),
    )
    .addOption(new Option('--zipf-exponent <s>', 'Zipf exponent (room of rank i gets 1/(i+1)^s)').default(simulationDefaults.zipfExponent).argParser(number('--zipf-exponent', (v) => v >= 0 && v <= 10, 'a number in [0, 10]')))
    .option('--trace-csv <file>', 'trace of per-room event counts: CSV with header room_id,events')
    .option('--trace-db <url>', 'trace of per-room event counts from the events table of a Myelin PostgreSQL database')
    .addOption(new Option('--rate <events/s>', 'mean arrival rate over all rooms').default(simulationDefaults.ratePerS).argParser(number('--rate', (v) => v > 0, 'a number > 0')))
    .addOption(new Option('--duration <s>', 'seconds of arrivals (queues then drain)').default(simulationDefaults.durationS).argParser(number('--duration', (v) => v > 0, 'a number > 0')))
    .addOption(
      new Option('--burstiness <b>', '0 = Poisson; up to 1 = on/off bursts at twice the mean rate')
        .default(simulationDefaults.burstiness)
        .argParser(number('--burstiness', (v) => v >= 0 && v <= 1, 'a number in [0, 1]')),
    )
    .addOption(new Option('--burst-period <s>', 'mean seconds in each burst state').default(simulationDefaults.burstPeriodS).argParser(number('--burst-period', (v) => v > 0, 'a number > 0')))
    .addOption(new Option('--persisters <n>', 'number of event persisters (persister1..N)').default(simulationDefaults.persisters).argParser(integer('--persisters', 1, 1000)))
    .addOption(new Option('--strategy <name>', 'shard strategy').choices(shardStrategies).default(simulationDefaults.strategy))
    .addOption(
      new Option('--pin <room=writer>', 'pin a room to a persister, e.g. !room0:sim=persister1 (repeatable)')
        .default({}, 'none')
        .argParser(pin),
    )
    .addOption(new Option('--txn-fixed-ms <ms>', 'solo cost of one persist transaction (overrides the calibration)').argParser(number('--txn-fixed-ms', (v) => v > 0, 'a number > 0')))
    .addOption(new Option('--per-event-ms <ms>', 'solo cost per event in a transaction (overrides the calibration)').argParser(number('--per-event-ms', (v) => v >= 0, 'a number >= 0')))
    .addOption(new Option('--parallel-efficiency <e>', 'capacity each extra parallel transaction adds (overrides the calibration)').argParser(number('--parallel-efficiency', (v) => v >= 0 && v <= 1, 'a number in [0, 1]')))
    .addOption(new Option('--max-batch <n>', 'most events one room transaction takes').default(defaultMaxBatch).argParser(integer('--max-batch', 1, 100_000)))
    .addOption(new Option('--concurrency <n>', 'room transactions in flight per persister').default(defaultConcurrency).argParser(integer('--concurrency', 1, 1000)))
    .option('--calibration <file>', 'benchmark results with persister.txn_fixed_ms and per_event_ms (default scripts/bench/results.json, if present)')
    .addOption(new Option('--seed <n>', 'random seed; the same seed and flags give the same output').default(simulationDefaults.seed).argParser(integer('--seed', 0, 0xffffffff)))
    .option('--json', 'print the result as JSON instead of tables')
    .option('--svg <file>', 'also write charts (load, latency distribution, moved rooms) to an SVG file')
    .option('--no-progress', 'never show the progress bar (it shows only on a terminal and without --json)')
    .action(async function (this: Command) {
      await run(this, this.opts<SimulateFlags>(), deps)
    })
  return command
}

async function run(command: Command, flags: SimulateFlags, io: SimulateIo): Promise<void> {
  const fail = (message: string): never => command.error(`error: ${message}`, { exitCode: 1, code: 'myelin.simulate.invalid' })
  const explicit = (key: string): boolean => command.getOptionValueSource(key) === 'cli'

  const traceSources = [flags.traceCsv, flags.traceDb].filter((source) => source !== undefined)
  if (traceSources.length > 1) fail('give one trace source: --trace-csv or --trace-db, not both')
  if (flags.traceDb !== undefined && !postgresUrlPattern.test(flags.traceDb)) fail('--trace-db must be a postgres:// URL')
  let kind = flags.distribution
  if (traceSources.length > 0 && !explicit('distribution')) kind = 'trace'
  if (kind === 'trace' && traceSources.length === 0) fail('--distribution trace needs --trace-csv FILE or --trace-db URL')
  if (kind !== 'trace' && traceSources.length > 0) fail(`--trace-csv and --trace-db need --distribution trace, not ${kind}`)
  if (kind === 'trace' && explicit('rooms')) fail('--rooms does not apply to a trace: the trace decides the rooms')
  if (kind !== 'zipf' && explicit('zipfExponent')) fail(`--zipf-exponent applies only to --distribution zipf, not ${kind}`)

  let distribution: Distribution
  if (kind === 'trace') {
    let rows: TraceRow[]
    try {
      if (flags.traceCsv !== undefined) {
        rows = parseTraceCsv(io.readFile(flags.traceCsv), flags.traceCsv)
      } else {
        rows = await io.loadTraceFromDatabase(flags.traceDb as string)
      }
    } catch (err) {
      const source = flags.traceCsv !== undefined ? flags.traceCsv : 'the --trace-db database'
      return fail(`cannot read the trace from ${source}: ${(err as Error).message}`)
    }
    distribution = { kind: 'trace', rows, source: flags.traceCsv ?? redactUrl(flags.traceDb as string) }
  } else if (kind === 'uniform') {
    distribution = { kind: 'uniform', rooms: flags.rooms }
  } else {
    distribution = { kind: 'zipf', rooms: flags.rooms, exponent: flags.zipfExponent }
  }

  let model: Partial<ServiceModel>
  try {
    model = resolveCommandModel(flags, io)
  } catch (err) {
    return fail((err as Error).message)
  }

  const showProgress = flags.progress && !flags.json && io.stderr.isTTY === true
  const bar = showProgress
    ? new cliProgress.SingleBar(
        { stream: io.stderr, format: 'simulating [{bar}] {percentage}% | {duration_formatted}', clearOnComplete: true, hideCursor: true },
        cliProgress.Presets.shades_classic,
      )
    : undefined
  let result: SimulationResult
  try {
    bar?.start(100, 0)
    result = runSimulation({
      seed: flags.seed,
      distribution,
      ratePerS: flags.rate,
      durationS: flags.duration,
      burstiness: flags.burstiness,
      burstPeriodS: flags.burstPeriod,
      persisters: flags.persisters,
      strategy: flags.strategy,
      pins: flags.pin,
      model,
      ...(bar ? { onProgress: (fraction: number) => bar.update(Math.floor(fraction * 100)) } : {}),
    })
  } catch (err) {
    return fail((err as Error).message)
  } finally {
    bar?.stop()
  }

  io.stdout.write(flags.json ? formatJson(result) : formatReport(result))
  if (flags.svg !== undefined) {
    try {
      io.writeFile(flags.svg, renderSvg(result))
    } catch (err) {
      return fail(`cannot write ${flags.svg}: ${(err as Error).message}`)
    }
    if (!flags.json) io.stderr.write(`charts written to ${flags.svg}\n`)
  }
}

/** Calibration file figures, overridden flag by flag; `source` names both. */
function resolveCommandModel(flags: SimulateFlags, io: SimulateIo): Partial<ServiceModel> {
  const calibration = readCalibration(flags.calibration ?? defaultCalibrationPath, {
    required: flags.calibration !== undefined,
    readFile: io.readFile,
  })
  const overridden = [
    flags.txnFixedMs !== undefined ? '--txn-fixed-ms' : '',
    flags.perEventMs !== undefined ? '--per-event-ms' : '',
    flags.parallelEfficiency !== undefined ? '--parallel-efficiency' : '',
  ].filter(Boolean)
  const source =
    overridden.length === 3
      ? `flags ${overridden.join(', ')}`
      : overridden.length > 0
        ? `flags ${overridden.join(', ')}; the rest from ${calibration.source}`
        : calibration.source
  return {
    txnFixedMs: flags.txnFixedMs ?? calibration.txnFixedMs,
    perEventMs: flags.perEventMs ?? calibration.perEventMs,
    parallelEfficiency: flags.parallelEfficiency ?? calibration.parallelEfficiency,
    maxBatch: flags.maxBatch,
    concurrency: flags.concurrency,
    source,
  }
}

function number(flag: string, valid: (value: number) => boolean, expected: string): (value: string) => number {
  return (value) => {
    const parsed = Number(value)
    if (value.trim() === '' || !Number.isFinite(parsed) || !valid(parsed)) {
      throw new InvalidArgumentError(`Expected ${expected}.`)
    }
    return parsed
  }
}

function integer(flag: string, min: number, max = Number.MAX_SAFE_INTEGER): (value: string) => number {
  return (value) => {
    const trimmed = value.trim().replace(/_/g, '')
    const parsed = Number(trimmed)
    if (!/^\d+$/.test(trimmed) || parsed < min || parsed > max) {
      throw new InvalidArgumentError(`Expected an integer in [${min}, ${max}].`)
    }
    return parsed
  }
}

function pin(value: string, previous: Record<string, string>): Record<string, string> {
  const at = value.lastIndexOf('=')
  const room = at < 0 ? '' : value.slice(0, at).trim()
  const writer = at < 0 ? '' : value.slice(at + 1).trim()
  if (room === '' || writer === '') throw new InvalidArgumentError('--pin must look like ROOM=WRITER, e.g. !room0:sim=persister1.')
  if (room in previous) throw new InvalidArgumentError(`--pin: ${room} is pinned twice.`)
  return { ...previous, [room]: writer }
}

/** The URL without its password, for the report. */
function redactUrl(url: string): string {
  try {
    const parsed = new URL(url)
    if (parsed.password !== '') parsed.password = '***'
    return parsed.toString()
  } catch {
    return 'database'
  }
}
