import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { preallocateWal } from '../../../scripts/bench/bench-db.js'
import { expect } from 'chai'
import { adminUrl, redisUrl, withAdmin } from '../../support/db.js'

const runScript = fileURLToPath(new URL('../../../scripts/bench/run.ts', import.meta.url))

interface Run {
  readonly code: number | null
  readonly lines: Record<string, unknown>[]
  readonly stderr: string
}

function runBench(args: readonly string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', runScript, ...args], {
      env: { ...process.env, MYELIN_TEST_DATABASE_URL: adminUrl(), MYELIN_TEST_REDIS_URL: redisUrl() },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    const timer = setTimeout(() => child.kill('SIGKILL'), 150_000)
    child.once('error', reject)
    child.once('close', (code) => {
      clearTimeout(timer)
      const lines = stdout
        .split('\n')
        .filter((line) => line.trim() !== '')
        .map((line) => JSON.parse(line) as Record<string, unknown>)
      resolve({ code, lines, stderr })
    })
  })
}

describe('make bench (scripts/bench/run.ts --quick)', function () {
  this.timeout(180_000)

  it('prints a machine line, then results with positive ratios referencing it', async () => {
    const { code, lines, stderr } = await runBench(['--quick', '--only', 'streams,persister,persister-stored,persister-gather,sliding,purge'])
    expect(code, stderr).to.equal(0)
    const [machine, ...results] = lines
    expect(machine).to.include({ kind: 'machine' })
    expect(machine?.['cores']).to.be.a('number').above(0)
    expect(machine?.['durability']).to.have.property('fsync')
    expect(results.map((r) => r['benchmark'])).to.have.members([
      'streams.ids',
      'streams.propagation',
      'streams.propagation',
      'persister.throughput',
      'persister.stored',
      'persister.gather',
      'sliding.initial',
      'sliding.wakeup',
      'purge.history',
    ])
    for (const result of results) {
      expect(result, JSON.stringify(result)).to.include({ kind: 'result', machine: machine?.['id'] })
      expect(result['ratio'], JSON.stringify(result)).to.be.a('number').above(0)
      expect(Number.isFinite(result['ratio'])).to.equal(true)
      expect(result['ratioMeaning']).to.be.a('string')
    }
    expect(stderr).to.match(/streams: done/)
  })

  it('runs the end-to-end benchmark on a real cluster and checks its figures against the goals', async () => {
    const { code, lines, stderr } = await runBench(['--quick', '--only', 'e2e'])
    expect(code, stderr).to.equal(0)
    const [machine, e2e, ...rest] = lines
    expect(rest).to.deep.equal([])
    expect(e2e).to.include({ kind: 'result', machine: machine?.['id'], benchmark: 'e2e', distribution: 'zipf', concurrency: 64 })
    const result = e2e?.['result'] as { events: number; errors: number; probesLost: number; sendMs: { p99: number } }
    expect(result.events, 'sends answered').to.be.above(0)
    expect(result.errors).to.equal(0)
    const runs = e2e?.['runs'] as { hotRoomSendP99: number }[]
    expect(runs).to.have.length(1)
    expect(runs[0]?.hotRoomSendP99).to.be.a('number').above(0)
    // The goals: one check per goal, each figure the one the result reports, `met` only when all are.
    const goals = e2e?.['goals'] as { met: boolean; checks: { goal: string; value: number | null; met: boolean }[] }
    expect(goals.checks.map((c) => c.goal)).to.deep.equal([
      'events/s >= 3000',
      'send p99 <= 50 ms',
      'sync wake-up p99 under load <= 20 ms',
      'probes lost = 0',
      'hot room send p99 <= 100 ms',
    ])
    expect(goals.checks[1]?.value).to.equal(result.sendMs.p99)
    expect(goals.checks[3]).to.deep.equal({ goal: 'probes lost = 0', value: result.probesLost, met: result.probesLost === 0 })
    expect(goals.met).to.equal(goals.checks.every((c) => c.met))
    expect(stderr).to.match(/e2e goals \(1 api \+ 2 persisters \+ redis, zipf, C=64\): [0-5]\/5 goals met: /)
  })

  it('rejects an unknown benchmark name without running anything', async () => {
    const { code, lines, stderr } = await runBench(['--quick', '--only', 'nope'])
    expect(code).to.not.equal(0)
    expect(lines).to.deep.equal([])
    expect(stderr).to.match(/unknown benchmark nope/)
  })
})

describe('preallocateWal (the e2e benchmark starts on recycled WAL segments)', () => {
  it('should leave PostgreSQL with at least the segments it was asked for, past a checkpoint', async () => {
    const before = Number((await withAdmin((c) => c.query<{ n: string }>('SELECT count(*)::text AS n FROM pg_ls_waldir()'))).rows[0]!.n)
    const after = await preallocateWal(adminUrl(), before + 4)
    expect(after).to.be.at.least(before + 4)
  })
})

