import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { expect } from 'chai'
import { CommanderError } from 'commander'
import { simulateCommand } from '../../../../persisters/simulator/command.js'
import type { SimulateIo } from '../../../../persisters/simulator/command.js'
import type { TraceRow } from '../../../../persisters/simulator/workload.js'

interface Run {
  out: string
  err: string
  error?: CommanderError
}

const quick = ['--rooms', '300', '--rate', '200', '--duration', '2', '--persisters', '3']

async function run(args: string[], io: Partial<SimulateIo> = {}, isTTY = false): Promise<Run> {
  const result: Run = { out: '', err: '' }
  const stderr = Object.assign(
    new Writable({
      write(chunk, _encoding, callback) {
        result.err += String(chunk)
        callback()
      },
    }),
    { isTTY },
  )
  const command = simulateCommand({
    stdout: { write: (text: string) => (result.out += text) },
    stderr,
    readFile: () => {
      throw Object.assign(new Error('ENOENT: no such file'), { code: 'ENOENT' })
    },
    ...io,
  })
    .exitOverride()
    .configureOutput({ writeErr: (text) => (result.err += text), writeOut: (text) => (result.out += text) })
  try {
    await command.parseAsync(args, { from: 'user' })
  } catch (err) {
    if (!(err instanceof CommanderError)) throw err
    result.error = err
  }
  return result
}

async function expectUsageError(args: string[], pattern: RegExp, io: Partial<SimulateIo> = {}): Promise<void> {
  const { err, out, error } = await run(args, io)
  expect(error, `no error for ${args.join(' ')}`).to.be.instanceOf(CommanderError)
  expect(error!.exitCode).to.equal(1)
  expect(err).to.match(/^error: /)
  expect(err).to.match(pattern)
  expect(out).to.equal('')
}

describe('simulateCommand', () => {
  it('should print the report tables', async () => {
    const { out, err, error } = await run(quick)
    expect(error).to.equal(undefined)
    expect(err).to.equal('')
    expect(out).to.match(/^Myelin sharding simulation \(seed 1\)/)
    for (const text of ['persister1', 'persister3', 'queueing delay', 'linear-position lag', 'Hottest room !room0:sim', 'rendezvous', 'modulo', '3 -> 4 rooms', '3 -> 2 rooms']) {
      expect(out).to.include(text)
    }
  })

  it('should print byte-identical JSON for the same seed and flags', async () => {
    const args = [...quick, '--seed', '77', '--burstiness', '0.3', '--strategy', 'modulo', '--json']
    const first = await run(args)
    const second = await run(args)
    expect(first.out).to.equal(second.out)
    const parsed = JSON.parse(first.out)
    expect(parsed).to.deep.include({ seed: 77 })
    expect(parsed.topology).to.deep.equal({ persisters: 3, strategy: 'modulo', pins: {} })
    expect(parsed.workload).to.include({ rooms: 300, ratePerS: 200, durationS: 2, burstiness: 0.3 })
    const other = await run([...quick, '--seed', '78', '--burstiness', '0.3', '--strategy', 'modulo', '--json'])
    expect(other.out).to.not.equal(first.out)
  })

  it('should pin rooms given with --pin', async () => {
    const { out } = await run([...quick, '--json', '--pin', '!room0:sim=persister3', '--pin', '!room1:sim=persister3'])
    const parsed = JSON.parse(out)
    expect(parsed.topology.pins).to.deep.equal({ '!room0:sim': 'persister3', '!room1:sim': 'persister3' })
    expect(parsed.hottestRoom).to.include({ roomId: '!room0:sim', owner: 'persister3', pinned: true })
  })

  it('should apply model flags and say so', async () => {
    const { out } = await run([...quick, '--json', '--txn-fixed-ms', '1', '--per-event-ms', '0.1', '--max-batch', '20', '--concurrency', '2'])
    const model = JSON.parse(out).model
    expect(model).to.include({ txnFixedMs: 1, perEventMs: 0.1, maxBatch: 20, concurrency: 2, parallelEfficiency: 0.25 })
    expect(model.source).to.match(/^flags --txn-fixed-ms, --per-event-ms; the rest from built-in defaults/)
  })

  it('should read the calibration file', async () => {
    const readFile = (path: string): string => {
      if (path !== '/bench/results.json') throw new Error(`unexpected ${path}`)
      return JSON.stringify({ persister: { txn_fixed_ms: 0.5, per_event_ms: 0.05 } })
    }
    const { out } = await run([...quick, '--json', '--calibration', '/bench/results.json'], { readFile })
    expect(JSON.parse(out).model).to.include({ txnFixedMs: 0.5, perEventMs: 0.05, source: '/bench/results.json' })
  })

  it('should simulate a CSV trace and write an SVG file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'myelin-sim-'))
    try {
      const csv = join(dir, 'trace.csv')
      const svg = join(dir, 'out.svg')
      writeFileSync(csv, 'room_id,events\n!a:example.org,500\n!b:example.org,300\n!c:example.org,200\n')
      const { out, err, error } = await run(['--trace-csv', csv, '--rate', '100', '--duration', '3', '--persisters', '2', '--svg', svg, '--json'], {
        readFile: (path) => readFileSync(path, 'utf8'),
        writeFile: (path, text) => writeFileSync(path, text),
      })
      expect(error).to.equal(undefined)
      expect(err).to.equal('')
      const parsed = JSON.parse(out)
      expect(parsed.workload).to.include({ distribution: 'trace', rooms: 3 })
      expect(parsed.hottestRoom.roomId).to.equal('!a:example.org')
      expect(readFileSync(svg, 'utf8')).to.match(/<svg [^>]*>[\s\S]*Load per persister[\s\S]*<\/svg>\n$/)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('should read a trace from the database loader', async () => {
    let asked = ''
    const loadTraceFromDatabase = async (url: string): Promise<TraceRow[]> => {
      asked = url
      return [
        { roomId: '!x:db', events: 7 },
        { roomId: '!y:db', events: 3 },
      ]
    }
    const { out } = await run(['--distribution', 'trace', '--trace-db', 'postgres://u:secret@db/myelin', '--rate', '50', '--duration', '2', '--json'], {
      loadTraceFromDatabase,
    })
    expect(asked).to.equal('postgres://u:secret@db/myelin')
    const parsed = JSON.parse(out)
    expect(parsed.workload.description).to.include('postgres://u:***@db/myelin')
    expect(out).to.not.include('secret')
  })

  it('should show a progress bar only on a terminal and without --json or --no-progress', async () => {
    const tty = await run(quick, {}, true)
    expect(tty.err).to.include('simulating')
    expect(tty.out).to.match(/^Myelin sharding simulation/)
    expect((await run([...quick, '--no-progress'], {}, true)).err).to.equal('')
    expect((await run([...quick, '--json'], {}, true)).err).to.equal('')
    expect((await run(quick, {}, false)).err).to.equal('')
  })

  describe('bad flags', () => {
    it('should reject malformed numbers and unknown choices', async () => {
      await expectUsageError(['--rate', 'fast'], /'--rate <events\/s>' argument 'fast' is invalid\. Expected a number > 0/)
      await expectUsageError(['--persisters', '0'], /--persisters <n>.*Expected an integer in \[1, 1000\]/)
      await expectUsageError(['--rooms', '2.5'], /--rooms <n>.*Expected an integer/)
      await expectUsageError(['--burstiness', '2'], /Expected a number in \[0, 1\]/)
      await expectUsageError(['--strategy', 'ring'], /Allowed choices are rendezvous, modulo/)
      await expectUsageError(['--distribution', 'pareto'], /Allowed choices are uniform, zipf, trace/)
      await expectUsageError(['--seed', '-1'], /--seed/)
      await expectUsageError(['--frobnicate'], /unknown option '--frobnicate'/)
      await expectUsageError(['stray'], /too many arguments/)
    })

    it('should reject malformed or impossible pins', async () => {
      await expectUsageError(['--pin', 'room0'], /--pin must look like ROOM=WRITER/)
      await expectUsageError(['--pin', '!room0:sim=persister1', '--pin', '!room0:sim=persister2'], /pinned twice/)
      await expectUsageError([...quick, '--pin', '!room0:sim=persister9'], /pin of !room0:sim names writer "persister9"/)
      await expectUsageError([...quick, '--pin', '!elsewhere:sim=persister1'], /!elsewhere:sim not in the workload \(rooms are !room0:sim, !room1:sim … !room299:sim\)/)
    })

    it('should reject contradictory combinations', async () => {
      await expectUsageError(['--distribution', 'trace'], /--distribution trace needs --trace-csv FILE or --trace-db URL/)
      await expectUsageError(['--trace-csv', 'a.csv', '--trace-db', 'postgres://x'], /one trace source/)
      await expectUsageError(['--distribution', 'uniform', '--trace-csv', 'a.csv'], /need --distribution trace, not uniform/)
      await expectUsageError(['--trace-csv', 'a.csv', '--rooms', '10'], /--rooms does not apply to a trace/)
      await expectUsageError(['--distribution', 'uniform', '--zipf-exponent', '2'], /--zipf-exponent applies only to --distribution zipf/)
      await expectUsageError(['--rate', '100000', '--duration', '1000'], /lower the rate or the duration/)
    })

    it('should report unreadable inputs', async () => {
      await expectUsageError(['--trace-csv', 'missing.csv'], /cannot read the trace from missing\.csv: ENOENT/)
      await expectUsageError(['--trace-db', 'localhost/myelin'], /--trace-db must be a postgres:\/\/ URL/)
      await expectUsageError(['--trace-csv', 'bad.csv'], /bad\.csv:2: expected ROOM_ID,EVENT_COUNT/, { readFile: () => 'room_id,events\n!a:x;5\n' })
      await expectUsageError(['--calibration', 'nope.json'], /calibration file nope\.json does not exist/)
      await expectUsageError(['--trace-db', 'postgres://db/x'], /cannot read the trace from the --trace-db database: connection refused/, {
        loadTraceFromDatabase: async () => {
          throw new Error('connection refused')
        },
      })
    })
  })
})
