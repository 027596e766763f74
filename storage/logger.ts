import { pino, type DestinationStream, type Logger, type LoggerOptions } from 'pino'

/**
 * Paths redacted from every log line: access tokens, passwords, the replication secret and
 * authorization headers never reach logs.
 */
export const redactPaths = [
  'req.headers.authorization',
  'headers.authorization',
  'authorization',
  'access_token',
  'accessToken',
  'password',
  'new_password',
  'replication_secret',
  'replicationSecret',
  'registration_shared_secret',
  'signing_key',
  '*.access_token',
  '*.password',
  '*.replication_secret',
  '*.registration_shared_secret',
  '*.signing_key',
  'config.replication_secret',
  'config.registration_shared_secret',
  'config.signing_key',
]

/** Bindings a component's child logger may carry. Untrusted input never becomes a binding. */
export interface LogScope {
  component?: string
  worker?: string
  roomId?: string
  batchId?: string
  writer?: string
  stream?: string
}

/**
 * Where a process logs: file descriptor 1 (stdout) or 2 (stderr), written synchronously.
 *
 * Not pino's asynchronous default: that one is flushed at exit by a loop that retries every
 * write error, EPIPE included, forever. A process whose reader is gone (the children of a
 * `myelin cluster` killed with SIGKILL) then hung in `process.exit`, still bound to its ports.
 * A synchronous destination meets EPIPE on its first write, and pino stops writing to it.
 *
 * @example
 * const log = createLogger({ name: 'router' }, logDestination(2))
 */
export function logDestination(fd: 1 | 2): DestinationStream {
  return pino.destination({ dest: fd, sync: true })
}

/**
 * The root logger of a process (one per `main`; stdout unless `destination` says otherwise);
 * components take `log.child({component})`.
 *
 * @example
 * const log = createLogger({ level: 'info', name: 'persister1' })
 * log.child({ component: 'room-queue' }).info({ roomId, events: 3 }, 'batch persisted')
 */
export function createLogger(options: { level?: string; name?: string } & LoggerOptions = {}, destination?: DestinationStream): Logger {
  const settings = {
    level: options.level ?? process.env.MYELIN_LOG_LEVEL ?? 'info',
    redact: { paths: redactPaths, censor: '[redacted]' },
    ...options,
  }
  return pino(settings, destination ?? logDestination(1))
}

/** A logger that writes nothing, for tests and library users who pass none. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' })
}

export type { Logger }
