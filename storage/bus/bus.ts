import { StorageError } from '../errors.js'
import type { Logger } from '../logger.js'
import type { BusMessage } from './bus-message.js'
import { createMemoryBus } from './memory-bus.js'
import { createPostgresBus } from './postgres-bus.js'
import { createRedisBus } from './redis-bus.js'

export type { BusMessage } from './bus-message.js'

/** `up`: the bus can deliver and publish; `down`: it cannot (yet), and consumers poll Postgres. */
export type BusState = 'up' | 'down'

/**
 * The channel every process of one homeserver shares to exchange stream positions and hints
 * (ARCHITECTURE §5). Three transports (Redis pub/sub, Postgres LISTEN/NOTIFY, in-process) pass
 * one contract suite (`test/integration/storage/bus.spec.ts`).
 *
 * Guarantees:
 * - At most once: a message published while a receiver is disconnected is lost for it. The
 *   bus is never the only copy of data; consumers MUST catch up from Postgres on every `up`
 *   (and MUST poll Postgres while `down`).
 * - Every process on the channel receives every message, including the publishing process.
 * - Messages from one bus instance arrive in publish order at every receiver.
 * - Malformed lines received from the wire are logged and dropped; they never reach handlers.
 *
 * Caller duties: call `start()` before `publish()`; call `close()` at shutdown. On every `up`,
 * writers SHOULD announce their positions (peers cannot see a reconnect; Synapse PR #7482);
 * `up` is reported only once the subscription is active, so a REPLICATE sent then is not
 * answered before this process can hear the answers (Synapse PR #7427).
 *
 * @example
 * const bus = createBus({ redis: { url: 'redis://127.0.0.1:6379' }, serverName: 'example.org', log })
 * bus.onStateChange((state) => (state === 'up' ? catchUpFromPostgres() : startPolling()))
 * const unsubscribe = bus.subscribe((m) => { if (m.type === 'POSITION') tracker.advance(m.writer, m.next) })
 * await bus.start()
 * await bus.publish({ type: 'POSITION', stream: 'events', writer: 'persister1', prev: 100n, next: 105n, rooms: ['!a:hs'] })
 */
export interface Bus {
  readonly transport: 'redis' | 'postgres' | 'memory'
  readonly state: BusState
  /**
   * Connects and subscribes; resolves once messages published by anyone afterwards will be
   * delivered. Rejects with `ES_UNAVAILABLE` when the transport is not up within the start
   * timeout; the bus then keeps reconnecting in the background (`onStateChange` reports the
   * `up`), and the caller still MUST `close()` it. A second call returns the first call's promise.
   */
  start(): Promise<void>
  /**
   * Delivers to every subscriber in every process on the same channel, including this
   * process's own. Rejects with `ES_UNAVAILABLE` (never hangs) when the bus is not started,
   * closed or the transport is down, and with `ES_INVALID_PARAM` for an unencodable message.
   * A room hint that cannot be encoded is dropped, not rejected (see `encodeBusMessage`).
   */
  publish(message: BusMessage): Promise<void>
  /**
   * Returns an unsubscribe function. Handlers are called synchronously in arrival order per
   * transport connection; a throwing handler is logged, never breaks delivery.
   */
  subscribe(handler: (message: BusMessage) => void): () => void
  /**
   * `up` after every (re)connect, the first included, and `down` when the connection is lost;
   * called only on a change. Consumers catch up from Postgres on `up`.
   */
  onStateChange(handler: (state: BusState) => void): () => void
  /** Disconnects. Idempotent. Afterwards `state` is `down`, no handler is called again and `publish` rejects. */
  close(): Promise<void>
}

/** Options of `createBus`; keys follow the configuration file (`redis.sentinel_name`). */
export interface CreateBusOptions {
  redis?: { url?: string; sentinels?: readonly { host: string; port: number }[]; sentinel_name?: string }
  /** Postgres URL; used for LISTEN/NOTIFY when no Redis is configured. */
  databaseUrl?: string
  /** Homeserver name; processes of one homeserver share the channel derived from it. */
  serverName: string
  /** All components run in this process (no Redis, no database URL needed). */
  monolith?: boolean
  log: Logger
}

/**
 * Picks the transport: Redis when `redis` has a URL or sentinels, else Postgres when
 * `databaseUrl` is set, else in-process when `monolith`. Creating a bus does no I/O.
 *
 * @throws StorageError `ES_CONFIG_INVALID` when none applies.
 * @example
 * createBus({ databaseUrl: 'postgres://myelin@db/myelin', serverName: 'example.org', log }).transport // 'postgres'
 * createBus({ serverName: 'example.org', monolith: true, log }).transport // 'memory'
 */
export function createBus(options: CreateBusOptions): Bus {
  const { redis, databaseUrl, serverName, log } = options
  if (redis && (redis.url !== undefined || (redis.sentinels?.length ?? 0) > 0)) {
    return createRedisBus({
      url: redis.url,
      sentinels: redis.sentinels,
      sentinelName: redis.sentinel_name,
      serverName,
      log,
    })
  }
  if (databaseUrl !== undefined && databaseUrl !== '') {
    return createPostgresBus({ connectionString: databaseUrl, serverName, log })
  }
  if (options.monolith) return createMemoryBus({ log })
  throw new StorageError(
    'ES_CONFIG_INVALID',
    'no bus transport: configure redis.url or redis.sentinels, a database URL, or run as a monolith',
  )
}
