import { UsageError } from './usage-error.js'
import { Command } from 'commander'
import { loadConfig } from '../../storage/config.js'

/** Collects a repeatable flag's values. */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value]
}

/**
 * `myelin config check shared.yaml [worker.yaml]` (or with `--config`): validates the merged
 * files and prints every problem at once (exit 2), or `config ok` with the process's role.
 */
export function configCommand(): Command {
  const config = new Command('config').description('Work with configuration files.')
  config
    .command('check')
    .description('Validate configuration files; every problem is listed at once.')
    .argument('[files...]', 'YAML files, shared first, then the worker file')
    .option('-c, --config <file>', 'a YAML file; repeatable (same as the arguments)', collect)
    .action(async (files: string[], options: { config?: string[] }) => {
      const all = [...(options.config ?? []), ...files]
      if (all.length === 0) throw new UsageError('name at least one config file')
      const parsed = await loadConfig(all)
      process.stdout.write(`config ok: worker ${parsed.worker_name} (${parsed.worker_app}) of ${parsed.server_name}\n`)
    })
  return config
}
