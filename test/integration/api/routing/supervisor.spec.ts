import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { expect } from 'chai'
import { createSupervisor, type ChildSpec, type ProcessInfo, type Supervisor } from '../../../../api/routing/supervisor.js'
import { isStorageError } from '../../../../storage/errors.js'
import { silentLogger } from '../../../../storage/logger.js'

const fakeChild = fileURLToPath(new URL('./fixtures/fake-child.mjs', import.meta.url))
const runSupervisor = fileURLToPath(new URL('./fixtures/run-supervisor.ts', import.meta.url))

function child(name: string, env: Record<string, string> = {}, role = 'api'): ChildSpec {
  return { name, role, command: process.execPath, args: [fakeChild], env: { FAKE_NAME: name, ...env } }
}

/** Running and not a zombie (an orphan's zombie may linger if PID 1 does not reap). */
function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z'
  } catch {
    return false
  }
}

async function waitFor(predicate: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

async function whoAnswers(port: number): Promise<{ name: string; pid: number }> {
  const response = await fetch(`http://127.0.0.1:${port}/`)
  return (await response.json()) as { name: string; pid: number }
}

describe('createSupervisor', function () {
  this.timeout(30_000)
  let supervisor: Supervisor | undefined
  let dir: string

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'myelin-supervisor-'))
  })
  afterEach(async () => {
    await supervisor?.stop(2000)
    supervisor = undefined
    await rm(dir, { recursive: true, force: true })
  })

  it('should start every child, learn its port from the ready line, and report it', async () => {
    const ready: ProcessInfo[] = []
    const output: string[] = []
    supervisor = createSupervisor({
      children: [child('api1'), child('api2'), child('persister1', {}, 'persister')],
      log: silentLogger(),
      onReady: (info) => ready.push(info),
      onOutput: (spec, stream, line) => output.push(`${spec.name}/${stream}: ${line}`),
    })
    const started = await supervisor.start()
    expect(started.map((p) => [p.name, p.role, p.restarts])).to.deep.equal([
      ['api1', 'api', 0],
      ['api2', 'api', 0],
      ['persister1', 'persister', 0],
    ])
    for (const p of started) {
      expect(p.port).to.be.a('number').and.not.equal(1)
      expect(await whoAnswers(p.port!)).to.deep.equal({ name: p.name, pid: p.pid })
    }
    expect(ready.map((r) => r.name).sort()).to.deep.equal(['api1', 'api2', 'persister1'])
    expect(supervisor.processes()).to.deep.equal(started)
    // The decoy JSON log line (with extra keys) is passed through as output, not taken as ready.
    expect(output.filter((l) => l.includes('"msg":"starting"'))).to.have.length(3)
  })

  it('should restart a crashed child with backoff and report its new port', async () => {
    const failFile = join(dir, 'failed-once')
    await writeFile(failFile, 'start normally')
    const ready: ProcessInfo[] = []
    supervisor = createSupervisor({
      children: [child('api1', { FAKE_FAIL_FIRST_FILE: failFile }), child('api2')],
      log: silentLogger(),
      onReady: (info) => ready.push(info),
      onOutput: () => {},
      initialBackoffMs: 50,
    })
    const [first] = await supervisor.start()
    await rm(failFile)
    // The restarted child fails once (exit 3 before ready), then comes up on the second restart.
    await fetch(`http://127.0.0.1:${first!.port}/crash`).catch(() => undefined)
    await waitFor(() => ready.filter((r) => r.name === 'api1').length === 2, 'api1 ready again')
    const again = supervisor.processes()[0]!
    expect(again.restarts).to.equal(2)
    expect(again.pid).to.not.equal(first!.pid)
    expect(ready.at(-1)).to.deep.equal(again)
    expect(await whoAnswers(again.port!)).to.deep.equal({ name: 'api1', pid: again.pid })
    expect(isAlive(first!.pid!)).to.equal(false)
  })

  it('should SIGTERM every child on stop and SIGKILL those that ignore it after the grace period', async () => {
    supervisor = createSupervisor({
      children: [child('polite'), child('stubborn', { FAKE_IGNORE_TERM: '1' })],
      log: silentLogger(),
      onOutput: () => {},
    })
    const started = await supervisor.start()
    const t0 = Date.now()
    await supervisor.stop(300)
    expect(Date.now() - t0).to.be.at.least(250)
    for (const p of started) expect(isAlive(p.pid!), p.name).to.equal(false)
    await supervisor.stop(300)
    expect(supervisor.processes().map((p) => p.pid)).to.deep.equal([null, null])
  })

  it('should reject start with the child stderr when a child exits before it is ready, and stop the others', async () => {
    const ready: ProcessInfo[] = []
    supervisor = createSupervisor({
      children: [child('ok'), child('broken', { FAKE_EXIT_EARLY: '1' })],
      log: silentLogger(),
      onReady: (info) => ready.push(info),
      onOutput: () => {},
    })
    const err = await supervisor.start().then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(isStorageError(err, 'ES_UNAVAILABLE'), String(err)).to.equal(true)
    expect((err as Error).message).to.include('broken').and.include('code 2').and.include('database.url is missing')
    for (const p of ready) expect(isAlive(p.pid!)).to.equal(false)
    expect(supervisor.processes().every((p) => p.pid === null)).to.equal(true)
  })

  it('should kill and reject a child that never prints its ready line', async () => {
    supervisor = createSupervisor({ children: [child('mute', { FAKE_NEVER_READY: '1' })], log: silentLogger(), onOutput: () => {}, readyTimeoutMs: 500 })
    const err = await supervisor.start().then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(isStorageError(err, 'ES_UNAVAILABLE'), String(err)).to.equal(true)
    expect((err as Error).message).to.include('signal SIGKILL')
  })

  it('should reject start when a child command cannot be spawned', async () => {
    supervisor = createSupervisor({ children: [{ name: 'ghost', role: 'api', command: join(dir, 'no-such-binary'), args: [] }], log: silentLogger(), onOutput: () => {} })
    const err = await supervisor.start().then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(isStorageError(err, 'ES_UNAVAILABLE'), String(err)).to.equal(true)
    expect((err as Error).message).to.include('ghost')
  })

  it('should take its children down when the supervisor process is SIGKILLed', async () => {
    const proc = spawn(process.execPath, ['--import', 'tsx', runSupervisor], { stdio: ['ignore', 'pipe', 'inherit'] })
    const line = await new Promise<string>((resolve, reject) => {
      proc.once('exit', (code) => reject(new Error(`supervisor exited with ${code}`)))
      createInterface({ input: proc.stdout! }).once('line', resolve)
    })
    const processes = JSON.parse(line) as ProcessInfo[]
    expect(processes).to.have.length(2)
    for (const p of processes) expect(isAlive(p.pid!)).to.equal(true)
    proc.kill('SIGKILL')
    await waitFor(() => processes.every((p) => !isAlive(p.pid!)), 'orphaned children to exit')
  })
})
