import { writeFile } from 'node:fs/promises'
import { UsageError } from './usage-error.js'
import { Command, InvalidArgumentError, Option } from 'commander'
import { eventWriters, loadConfig, type MyelinConfig } from '../../storage/config.js'
import { renderNginxConfig, type NginxWorker } from '../routing/nginx.js'
import { collect } from './config-command.js'

/** Parses `--worker name=role@host:port`. */
export function parseWorkerFlag(value: string): NginxWorker {
  const match = /^([A-Za-z0-9_.-]+)=(main|api|persister)@([^@\s]+):(\d{1,5})$/.exec(value)
  if (!match) throw new InvalidArgumentError(`"${value}" is not name=role@host:port (role: api, persister or main)`)
  const port = Number(match[4])
  if (port < 1 || port > 65535) throw new InvalidArgumentError(`port of "${value}" is out of range`)
  return { name: match[1] as string, role: match[2] as string, host: match[3] as string, port }
}

/**
 * The client listeners nginx routes to: every `instance_map` entry (writers as persisters, the
 * others as api workers), and the `--worker` flags. A flag adds a worker the config does not
 * list (api workers usually are not: instance_map lists the processes reachable over
 * replication) or, under the same name, replaces its entry (a client listener on another port).
 *
 * @example
 * proxyWorkers(config, [parseWorkerFlag('api1=api@127.0.0.1:8081')]) // persisters of instance_map, and api1
 */
export function proxyWorkers(config: MyelinConfig, flags: readonly NginxWorker[] = []): NginxWorker[] {
  const writers = new Set(eventWriters(config))
  const fromConfig = Object.entries(config.instance_map).map(([name, instance]) => ({ name, role: writers.has(name) ? 'persister' : 'api', host: instance.host, port: instance.port }))
  const named = new Map(flags.map((worker) => [worker.name, worker]))
  return [...fromConfig.filter((worker) => !named.has(worker.name)), ...named.values()]
}

/** `myelin proxy-config --format nginx --config shared.yaml [--worker api1=api@127.0.0.1:8081 …]`. */
export function proxyConfigCommand(): Command {
  return new Command('proxy-config')
    .description("Write a reverse-proxy configuration that routes the client API's path table to the workers.")
    .addOption(new Option('--format <format>', 'proxy flavour').choices(['nginx']).makeOptionMandatory())
    .requiredOption('-c, --config <file>', 'the shared config (and optionally a worker file); repeatable', collect)
    .option(
      '--worker <name=role@host:port>',
      "a worker's client listener, added to the config's instance_map (the same name replaces its entry); repeatable",
      (v: string, prev: NginxWorker[] = []) => [...prev, parseWorkerFlag(v)],
    )
    .option('--listen-port <port>', 'port nginx listens on', '8008')
    .option('--listen-address <address>', 'address nginx listens on', '0.0.0.0')
    .option('-o, --output <file>', 'write here instead of stdout')
    .action(async (flags: { config: string[]; worker?: NginxWorker[]; listenPort: string; listenAddress: string; output?: string }) => {
      const config = await loadConfig(flags.config)
      const listenPort = Number(flags.listenPort)
      if (!Number.isInteger(listenPort) || listenPort < 1 || listenPort > 65535) throw new UsageError('--listen-port must be a port number')
      const text = renderNginxConfig(config, { listenPort, listenAddress: flags.listenAddress, workers: proxyWorkers(config, flags.worker) })
      if (flags.output) await writeFile(flags.output, text)
      else process.stdout.write(text)
    })
}
