import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { StorageError } from '../../storage/errors.js'
import type { Logger } from '../../storage/logger.js'

/**
 * THE CHILD CONTRACT (what `myelin run` does and the supervisor relies on):
 * - once its client listener accepts connections, the child prints exactly one line
 *   `{"listening":true,"port":N}` on stdout (`formatListeningLine`); any other stdout or stderr
 *   output is passed through as logs;
 * - on SIGTERM it shuts down gracefully and exits;
 * - it exits when its stdin closes: the supervisor holds the other end, so a supervisor that dies
 *   (even SIGKILL) takes its children with it instead of leaving them bound to their ports.
 */

/**
 * Parses the child's ready line; `undefined` for any other line (including JSON log lines). Only
 * an object with exactly the keys `listening: true` and an integer `port` in 1..65535 counts.
 *
 * @example
 * parseListeningLine('{"listening":true,"port":8081}') // 8081
 * parseListeningLine('{"level":30,"msg":"listening","port":8081}') // undefined
 */
export function parseListeningLine(line: string): number | undefined {
  const text = line.trim()
  if (!text.startsWith('{')) return undefined
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return undefined
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined
  const record = value as Record<string, unknown>
  const { port } = record
  if (Object.keys(record).length !== 2 || record.listening !== true) return undefined
  return typeof port === 'number' && Number.isInteger(port) && port >= 1 && port <= 65535 ? port : undefined
}

/**
 * The ready line a child prints (with its newline).
 *
 * @example
 * process.stdout.write(formatListeningLine(server.address().port))
 */
export function formatListeningLine(port: number): string {
  return `${JSON.stringify({ listening: true, port })}\n`
}

export interface ChildSpec {
  /** Unique process name (`worker_name`). */
  readonly name: string
  /** `main`, `persister`, `api`, `background`; carried through to `processes()`. */
  readonly role: string
  readonly command: string
  readonly args: readonly string[]
  /** Added to the supervisor's own environment. */
  readonly env?: Readonly<Record<string, string>>
  readonly cwd?: string
}

export interface ProcessInfo {
  readonly name: string
  readonly role: string
  /** `null` while the child is waiting to be restarted. */
  readonly pid: number | null
  /** The port of its last ready line; `null` until the child is ready (again). */
  readonly port: number | null
  /** How many times the child was restarted after a crash. */
  readonly restarts: number
}

export interface SupervisorOptions {
  readonly children: readonly ChildSpec[]
  readonly log: Logger
  /** Called each time a child becomes ready: at start and after every restart (with its new port). */
  readonly onReady?: (info: ProcessInfo) => void
  /** Called with each output line of a child. Default: written to the supervisor's stderr. */
  readonly onOutput?: (child: ChildSpec, stream: 'stdout' | 'stderr', line: string) => void
  /** How long a child may take to print its ready line before it is killed. Default 60,000 ms. */
  readonly readyTimeoutMs?: number
  /** First restart delay; doubles per consecutive crash up to `maxBackoffMs`. Default 100 ms. */
  readonly initialBackoffMs?: number
  /** Default 5,000 ms. */
  readonly maxBackoffMs?: number
  /** A child ready at least this long before it crashed restarts with the initial delay again. Default 10,000 ms. */
  readonly stableMs?: number
}

export interface Supervisor {
  /**
   * Spawns every child and resolves once each has printed its ready line. If a child exits or
   * times out before its first ready line, every child is stopped and the promise rejects with
   * `ES_UNAVAILABLE` (the message has the child's last stderr lines): a child that cannot start
   * is a configuration problem, not something restarts fix.
   */
  start(): Promise<ProcessInfo[]>
  /** A snapshot of every child, in `children` order. */
  processes(): ProcessInfo[]
  /**
   * Stops restarting, sends SIGTERM to every child, SIGKILLs those still running after `graceMs`
   * (default 10,000), and resolves when all have exited. Idempotent.
   */
  stop(graceMs?: number): Promise<void>
}

interface ChildState {
  readonly spec: ChildSpec
  proc: ChildProcess | undefined
  port: number | null
  restarts: number
  /** Consecutive crashes since the child was last stable; drives the backoff. */
  failures: number
  everReady: boolean
  readyAt: number
  readyTimer: NodeJS.Timeout | undefined
  restartTimer: NodeJS.Timeout | undefined
  exited: Promise<void>
  /** Last stderr lines, for the startup failure message. */
  stderrTail: string[]
}

/**
 * Runs the processes of `myelin cluster` as children and keeps them running.
 *
 * States of a child: starting (spawned, no ready line yet) → ready (port known, `onReady` called)
 * → exited → waiting (backoff timer) → starting… A crash after the first start is answered by a
 * restart after `initialBackoffMs * 2^failures` (capped at `maxBackoffMs`); the router keeps
 * serving through other upstreams meanwhile, and `onReady` reports the new port. A child that
 * does not become ready within `readyTimeoutMs` is SIGKILLed and counts as a crash.
 *
 * The supervisor does not install signal handlers: the composition root wires
 * `process.once('SIGTERM', () => supervisor.stop())`.
 *
 * @example
 * const supervisor = createSupervisor({
 *   children: [{ name: 'api1', role: 'api', command: process.execPath, args: ['bin/myelin', 'run', '--config', 'c.yaml'] }],
 *   log,
 *   onReady: (info) => log.info({ name: info.name, port: info.port }, 'child ready'),
 * })
 * const processes = await supervisor.start() // [{ name: 'api1', role: 'api', pid: 4242, port: 40121, restarts: 0 }]
 * await supervisor.stop()
 */
export function createSupervisor(options: SupervisorOptions): Supervisor {
  const log = options.log.child({ component: 'supervisor' })
  const readyTimeoutMs = options.readyTimeoutMs ?? 60_000
  const initialBackoffMs = options.initialBackoffMs ?? 100
  const maxBackoffMs = options.maxBackoffMs ?? 5000
  const stableMs = options.stableMs ?? 10_000
  const onOutput = options.onOutput ?? ((_child, _stream, line) => process.stderr.write(`${line}\n`))
  const names = new Set(options.children.map((c) => c.name))
  if (names.size !== options.children.length) throw new StorageError('ES_CONFIG_INVALID', 'two supervised children share a name')

  const states: ChildState[] = options.children.map((spec) => ({
    spec,
    proc: undefined,
    port: null,
    restarts: 0,
    failures: 0,
    everReady: false,
    readyAt: 0,
    readyTimer: undefined,
    restartTimer: undefined,
    exited: Promise.resolve(),
    stderrTail: [],
  }))
  let stopping = false
  let started = false
  let startup: { resolve: () => void; reject: (err: Error) => void } | undefined

  const info = (state: ChildState): ProcessInfo => ({
    name: state.spec.name,
    role: state.spec.role,
    pid: state.proc?.pid ?? null,
    port: state.port,
    restarts: state.restarts,
  })

  function spawnChild(state: ChildState): void {
    const { spec } = state
    const proc = spawn(spec.command, [...spec.args], {
      env: { ...process.env, ...spec.env },
      cwd: spec.cwd,
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    state.proc = proc
    state.port = null
    let markExited: () => void = () => {}
    state.exited = new Promise((resolve) => (markExited = resolve))
    const exited = (code: number | null, signal: NodeJS.Signals | null): void => {
      markExited()
      onExit(state, proc, code, signal)
    }
    proc.once('exit', exited)
    proc.on('error', (err) => {
      log.error({ err, worker: spec.name }, 'child process error')
      // A child that could not be spawned at all (ENOENT, EACCES) emits no 'exit'.
      if (proc.pid === undefined) exited(null, null)
    })
    // The child owns the read end; EPIPE after it exits is expected.
    proc.stdin?.on('error', () => {})
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      const port = parseListeningLine(line)
      if (port === undefined) onOutput(spec, 'stdout', line)
      else onListening(state, proc, port)
    })
    createInterface({ input: proc.stderr! }).on('line', (line) => {
      state.stderrTail.push(line)
      if (state.stderrTail.length > 20) state.stderrTail.shift()
      onOutput(spec, 'stderr', line)
    })
    state.readyTimer = setTimeout(() => {
      log.error({ worker: spec.name, pid: proc.pid, readyTimeoutMs }, 'child did not become ready in time; killing it')
      proc.kill('SIGKILL')
    }, readyTimeoutMs)
    log.info({ worker: spec.name, pid: proc.pid }, 'child spawned')
  }

  function onListening(state: ChildState, proc: ChildProcess, port: number): void {
    if (state.proc !== proc) return
    clearTimeout(state.readyTimer)
    state.port = port
    state.readyAt = Date.now()
    state.everReady = true
    log.info({ worker: state.spec.name, pid: proc.pid, port }, 'child ready')
    options.onReady?.(info(state))
    if (startup && states.every((s) => s.port !== null)) {
      startup.resolve()
      startup = undefined
    }
  }

  function onExit(state: ChildState, proc: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    clearTimeout(state.readyTimer)
    if (state.proc !== proc) return
    state.proc = undefined
    state.port = null
    if (stopping) {
      log.info({ worker: state.spec.name, code, signal }, 'child stopped')
      return
    }
    if (!state.everReady) {
      const tail = state.stderrTail.length > 0 ? `:\n${state.stderrTail.join('\n')}` : ''
      const err = new StorageError('ES_UNAVAILABLE', `child ${state.spec.name} exited before it was ready (code ${code}, signal ${signal})${tail}`)
      log.error({ worker: state.spec.name, code, signal }, 'child exited before it was ready')
      if (startup) {
        startup.reject(err)
        startup = undefined
        return
      }
    }
    if (state.readyAt > 0 && Date.now() - state.readyAt >= stableMs) state.failures = 0
    const delayMs = Math.min(maxBackoffMs, initialBackoffMs * 2 ** state.failures)
    state.failures += 1
    log.warn({ worker: state.spec.name, code, signal, delayMs }, 'child exited; restarting')
    state.restartTimer = setTimeout(() => {
      state.restartTimer = undefined
      if (stopping) return
      state.restarts += 1
      spawnChild(state)
    }, delayMs)
  }

  async function stopAll(graceMs: number): Promise<void> {
    stopping = true
    for (const state of states) {
      clearTimeout(state.restartTimer)
      state.restartTimer = undefined
    }
    await Promise.all(
      states.map(async (state) => {
        const proc = state.proc
        if (!proc || proc.exitCode !== null || proc.signalCode !== null) return
        const exited = state.exited
        proc.kill('SIGTERM')
        const timer = setTimeout(() => {
          log.warn({ worker: state.spec.name, pid: proc.pid, graceMs }, 'child ignored SIGTERM; killing it')
          proc.kill('SIGKILL')
        }, graceMs)
        await exited
        clearTimeout(timer)
      }),
    )
  }

  let stopped: Promise<void> | undefined

  return {
    async start() {
      if (started) throw new StorageError('ES_CONFIG_INVALID', 'supervisor already started')
      started = true
      const ready = new Promise<void>((resolve, reject) => {
        startup = { resolve, reject }
      })
      for (const state of states) spawnChild(state)
      try {
        if (states.length > 0) await ready
      } catch (err) {
        await stopAll(2000)
        throw err
      }
      return states.map(info)
    },
    processes: () => states.map(info),
    stop(graceMs = 10_000) {
      stopped ??= stopAll(graceMs)
      return stopped
    },
  }
}
