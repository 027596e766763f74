/**
 * The `myelin` command (bin/myelin runs this file on the project's Node.js 24).
 *
 *   myelin migrate up|status|verify [--database URL] [--config FILE...]
 *   myelin config check --config FILE [--config FILE]
 *   myelin run --config shared.yaml [--config worker.yaml]
 *   myelin cluster [--embedded | --database URL] [--redis URL] [--persisters N] [--api-workers M] [--port P] [--data DIR]
 *   myelin simulate [...]            (see `myelin simulate --help`)
 *   myelin proxy-config --format nginx --config FILE [--listen-port P]
 *
 * Exit codes: 0 success, 1 a runtime failure (database unreachable, schema mismatch, verify
 * found edits), 2 invalid configuration or flags.
 */
import { Command, CommanderError } from 'commander'
import { simulateCommand } from '../../persisters/simulator/command.js'
import { ConfigError } from '../../storage/config.js'
import { StorageError } from '../../storage/errors.js'
import { clusterCommand, clusterRouterCommand } from './cluster-command.js'
import { configCommand } from './config-command.js'
import { migrateCommand } from './migrate-command.js'
import { proxyConfigCommand } from './proxy-config-command.js'
import { runCommand } from './run-command.js'
import { UsageError } from './usage-error.js'

const program = new Command('myelin')
  .description('Myelin: horizontally scalable storage for Matrix rooms (room-sharded event persisters, multi-writer streams, thin API workers).')
  .showHelpAfterError()
  .exitOverride()
program.addCommand(migrateCommand())
program.addCommand(configCommand())
program.addCommand(runCommand())
program.addCommand(clusterCommand())
program.addCommand(clusterRouterCommand(), { hidden: true })
program.addCommand(simulateCommand())
program.addCommand(proxyConfigCommand())
// Commands added with addCommand do not inherit exitOverride: apply it everywhere, so a flag
// error exits with 2 through exitCodeFor instead of commander's process.exit(1).
const overrideExits = (command: Command): void => {
  command.exitOverride()
  command.commands.forEach(overrideExits)
}
overrideExits(program)

try {
  await program.parseAsync(process.argv)
} catch (err) {
  // Exit now: a command that failed half-way (a listener port taken after the database pool and
  // the bus connected) would otherwise be kept alive by what it opened, doing nothing.
  process.exit(exitCodeFor(err))
}

function exitCodeFor(err: unknown): number {
  if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2
  if (err instanceof UsageError) {
    process.stderr.write(`myelin: ${err.message}\n`)
    return 2
  }
  if (err instanceof ConfigError) {
    process.stderr.write(`myelin: ${err.message}\n`)
    return 2
  }
  if (err instanceof StorageError) {
    process.stderr.write(`myelin: ${err.message}\n`)
    return 1
  }
  process.stderr.write(`myelin: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
  return 1
}
