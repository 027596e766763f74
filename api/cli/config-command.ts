import { Command } from 'commander'
import { loadConfig } from '../../storage/config.js'

/** Collects a repeatable flag's values. */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value]
}

/**
 * `myelin config check --config shared.yaml [--config worker.yaml]`: validates the merged files
 * and prints every problem at once (exit 2), or `config ok` with the process's role.
 */
export function configCommand(): Command {
  const config = new Command('config').description('Work with configuration files.')
  config
    .command('check')
    .description('Validate configuration files; every problem is listed at once.')
    .requiredOption('-c, --config <file>', 'a YAML file (shared first, then the worker file); repeatable', collect)
    .action(async (options: { config: string[] }) => {
      const parsed = await loadConfig(options.config)
      process.stdout.write(`config ok: worker ${parsed.worker_name} (${parsed.worker_app}) of ${parsed.server_name}\n`)
    })
  return config
}
