import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'

export const myelinBin = fileURLToPath(new URL('../../bin/myelin', import.meta.url))

export interface CliResult {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/**
 * Runs `bin/myelin <args>` to completion.
 *
 * @example
 * const { code, stdout } = await runMyelin(['migrate', 'status', '--database', url])
 */
export function runMyelin(args: readonly string[], options: { env?: Record<string, string>; timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(myelinBin, [...args], { env: { ...process.env, ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 30_000)
    child.once('error', reject)
    child.once('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })
}

/** A long-running `bin/myelin` child and the first stdout line that satisfies `ready`. */
export interface StartedChild<T> {
  readonly child: ChildProcess
  readonly ready: T
  /** Every stdout and stderr line so far. */
  readonly output: string[]
  /** Resolves with the exit code (or signal name) once the child exited. */
  readonly exited: Promise<number | string | null>
}

/**
 * Starts `bin/myelin <args>` and waits for a stdout line that `parse` accepts (returns non-undefined).
 * Rejects with the output when the child exits first or after `timeoutMs`.
 */
export function startMyelin<T>(args: readonly string[], parse: (line: string) => T | undefined, options: { env?: Record<string, string>; timeoutMs?: number } = {}): Promise<StartedChild<T>> {
  const child = spawn(myelinBin, [...args], { env: { ...process.env, ...options.env }, stdio: ['pipe', 'pipe', 'pipe'] })
  const output: string[] = []
  const exited = new Promise<number | string | null>((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal)))
  createInterface({ input: child.stderr! }).on('line', (line) => output.push(line))
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`myelin ${args.join(' ')} not ready in time:\n${output.slice(-20).join('\n')}`))
    }, options.timeoutMs ?? 60_000)
    let settled = false
    createInterface({ input: child.stdout! }).on('line', (line) => {
      output.push(line)
      if (settled) return
      const ready = parse(line)
      if (ready !== undefined) {
        settled = true
        clearTimeout(timer)
        resolve({ child, ready, output, exited })
      }
    })
    void exited.then((code) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      reject(new Error(`myelin ${args.join(' ')} exited (${code}) before it was ready:\n${output.slice(-20).join('\n')}`))
    })
  })
}

/** Parses a JSON line, or undefined. */
export function jsonLine(line: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(line)
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined
  } catch {
    return undefined
  }
}
