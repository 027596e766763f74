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
  return destination ? pino(settings, destination) : pino(settings)
}

/** A logger that writes nothing, for tests and library users who pass none. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' })
}

export type { Logger }
