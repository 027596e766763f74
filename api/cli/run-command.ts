import { fstatSync } from 'node:fs'
import { Command } from 'commander'
import { loadConfig } from '../../storage/config.js'
import { createLogger, type Logger } from '../../storage/logger.js'
import { startProcess } from '../process.js'
import { formatListeningLine } from '../routing/supervisor.js'
import { collect } from './config-command.js'

/**
 * `myelin run --config shared.yaml [--config worker.yaml]`: one process of any role. Prints
 * `{"listening":true,"port":N}` on stdout once its first listener accepts connections; stops
 * gracefully on SIGTERM/SIGINT (drains the persister, finishes in-flight transactions, closes the
 * bus); with `--supervised` also when its stdin closes (the cluster supervisor died).
 */
export function runCommand(): Command {
  return new Command('run')
    .description('Run one Myelin process (main, persister, api or background) from its configuration.')
    .requiredOption('-c, --config <file>', 'a YAML file (shared first, then the worker file); repeatable', collect)
    .option('--supervised', 'exit when stdin closes (set by `myelin cluster`)')
    .action(async (flags: { config: string[]; supervised?: boolean }) => {
      const config = await loadConfig(flags.config)
      const log = createLogger({ level: config.log_level, name: config.worker_name })
      const proc = await startProcess(config, { log })
      stopGracefullyOn({ log, close: () => proc.close(), supervised: flags.supervised === true })
      const ports = await proc.listen()
      process.stdout.write(formatListeningLine(ports[0] ?? 0))
    })
}

/**
 * Stops this process once, gracefully: on SIGTERM or SIGINT, and with `supervised` also when
 * stdin closes (the cluster supervisor died). Runs `close`, then exits 0; exits 1 when `close`
 * fails or takes longer than 30 s.
 *
 * @example
 * stopGracefullyOn({ log, close: () => proc.close(), supervised: flags.supervised === true })
 */
export function stopGracefullyOn(options: { log: Logger; close: () => Promise<void>; supervised: boolean }): void {
  const { log } = options
  let stopping = false
  const stop = (reason: string) => {
    if (stopping) return
    stopping = true
    log.info({ reason }, 'stopping')
    const force = setTimeout(() => {
      log.error('graceful shutdown took longer than 30 s; exiting')
      process.exit(1)
    }, 30_000)
    force.unref()
    options.close().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, 'shutdown failed')
        process.exit(1)
      },
    )
  }
  process.once('SIGTERM', () => stop('SIGTERM'))
  process.once('SIGINT', () => stop('SIGINT'))
  if (options.supervised && stdinIsPipe()) {
    process.stdin.on('end', () => stop('stdin closed'))
    process.stdin.on('error', () => stop('stdin closed'))
    process.stdin.resume()
  }
}

/** Whether stdin is a pipe or socket (a supervisor holds its other end). */
function stdinIsPipe(): boolean {
  try {
    const stat = fstatSync(0)
    return stat.isFIFO() || stat.isSocket()
  } catch {
    return false
  }
}
