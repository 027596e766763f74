import { Redis, type RedisOptions } from 'ioredis'
import { StorageError } from '../errors.js'
import type { Logger } from '../logger.js'
import type { Bus } from './bus.js'
import { BusEndpoint, reconnectBackoff } from './bus-endpoint.js'
import type { BusMessage } from './bus-message.js'

/** Options of `createRedisBus`. Durations in milliseconds. */
export interface RedisBusOptions {
  /** `redis://[:password@]host:port[/db]`; with `sentinels`, only its credentials are used. */
  url?: string
  /** Sentinel addresses; the master is looked up by `sentinelName`. */
  sentinels?: readonly { host: string; port: number }[]
  /** Master name known to the sentinels; default `mymaster`. */
  sentinelName?: string
  serverName: string
  log: Logger
  /** Publish (and health-check ping) reply timeout; default 5,000. */
  commandTimeoutMs?: number
  /** Cap of the exponential reconnect backoff; default 2,000. */
  maxReconnectDelayMs?: number
  /** Interval of the health-check PING on both connections (a dead peer is dropped and reconnected); default 30,000. */
  pingIntervalMs?: number
  /** How long `start()` waits for the first `up`; default 10,000. */
  startTimeoutMs?: number
}

/**
 * The Redis channel of a homeserver. Pub/sub ignores database numbers, so homeservers sharing
 * a Redis are separated only by this name (as in Synapse).
 *
 * @example
 * redisBusChannel('example.org') // 'myelin:example.org'
 */
export function redisBusChannel(serverName: string): string {
  return `myelin:${serverName}`
}

/**
 * A bus over Redis pub/sub with two connections, one SUBSCRIBE and one PUBLISH (Synapse
 * reference §7.1). Both reconnect forever with capped exponential backoff; Sentinel is
 * supported through ioredis' `sentinels`/`name` options.
 *
 * State: `up` once the subscriber has (re)subscribed **and** the publisher is ready; `down` as
 * soon as either connection closes. The channel is subscribed again by this module (not by
 * ioredis' auto-resubscribe) before `up` is reported, so a consumer that catches up from
 * Postgres on `up` cannot miss a message published after its catch-up query.
 *
 * Publishing fails fast while down: the publisher has no offline queue, commands in flight
 * when the connection drops are rejected rather than resent, and every command times out after
 * `commandTimeoutMs`. A rejected publish may still have been delivered.
 *
 * @example
 * const bus = createRedisBus({ url: 'redis://127.0.0.1:6379', serverName: 'example.org', log })
 * await bus.start()
 * await bus.publish({ type: 'REPLICATE', from: 'api1' }) // 'REPLICATE api1' on channel 'myelin:example.org'
 */
export function createRedisBus(options: RedisBusOptions): Bus {
  const log = options.log.child({ component: 'bus', transport: 'redis' })
  const channel = redisBusChannel(options.serverName)
  const commandTimeoutMs = options.commandTimeoutMs ?? 5000
  const maxReconnectDelayMs = options.maxReconnectDelayMs ?? 2000
  const pingIntervalMs = options.pingIntervalMs ?? 30_000
  const startTimeoutMs = options.startTimeoutMs ?? 10_000
  const endpoint = new BusEndpoint(log)

  const backoff = reconnectBackoff(maxReconnectDelayMs)
  const common: RedisOptions = {
    lazyConnect: true,
    retryStrategy: backoff,
    connectTimeout: commandTimeoutMs,
    ...(options.sentinels && options.sentinels.length > 0
      ? {
          sentinels: options.sentinels.map(({ host, port }) => ({ host, port })),
          name: options.sentinelName ?? 'mymaster',
          sentinelRetryStrategy: backoff,
        }
      : {}),
  }
  const connect = (extra: RedisOptions): Redis =>
    options.url !== undefined ? new Redis(options.url, { ...common, ...extra }) : new Redis({ ...common, ...extra })

  // Subscriber: re-subscribed by hand on each `ready` (see the comment of createRedisBus); its commands wait
  // for the connection, as they are issued only by this module.
  const subscriber = connect({ autoResubscribe: false, connectionName: 'myelin-bus-sub' })
  // Publisher: fail fast. maxRetriesPerRequest 0 flushes commands in flight at every close.
  const publisher = connect({
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    commandTimeout: commandTimeoutMs,
    connectionName: 'myelin-bus-pub',
  })

  /** Incremented on every close of the subscriber; a SUBSCRIBE reply from an older connection is ignored. */
  let subscriberEpoch = 0
  let subscribed = false
  let publisherReady = false
  let pingTimer: NodeJS.Timeout | undefined
  let errorsSinceUp = 0

  const updateState = (): void => endpoint.setState(subscribed && publisherReady ? 'up' : 'down')
  const onError = (connection: string) => (err: Error) => {
    // One warning per outage; repeats (every reconnect attempt) at debug.
    if (errorsSinceUp++ === 0) log.warn({ err, connection }, 'redis connection error')
    else log.debug({ err, connection }, 'redis connection error')
  }

  subscriber.on('message', (received: string, line: string) => {
    if (received === channel) endpoint.deliverLine(line)
  })
  subscriber.on('ready', () => {
    const epoch = subscriberEpoch
    subscriber.subscribe(channel).then(
      () => {
        if (epoch !== subscriberEpoch || endpoint.closed) return
        subscribed = true
        errorsSinceUp = 0
        updateState()
      },
      (err: unknown) => {
        // Usually the connection dropped meanwhile and the next `ready` subscribes again;
        // otherwise (e.g. an ACL refusal) the bus stays down and this is the reason.
        log.warn({ err }, 'redis subscribe failed')
      },
    )
  })
  subscriber.on('close', () => {
    subscriberEpoch++
    subscribed = false
    updateState()
  })
  subscriber.on('error', onError('subscriber'))
  publisher.on('ready', () => {
    publisherReady = true
    updateState()
  })
  publisher.on('close', () => {
    publisherReady = false
    updateState()
  })
  publisher.on('error', onError('publisher'))

  /** Connections with a health-check PING in flight; a slow one is not pinged again meanwhile. */
  const pinging = new Set<Redis>()
  const ping = (connection: Redis, name: string): void => {
    if (connection.status !== 'ready' || pinging.has(connection)) return
    pinging.add(connection)
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no PING reply within ${commandTimeoutMs} ms`)), commandTimeoutMs)
    })
    Promise.race([connection.ping(), timeout])
      .catch((err: unknown) => {
        if (endpoint.closed || connection.status !== 'ready') return
        log.warn({ err, connection: name }, 'redis health check failed; reconnecting')
        // Destroyed, not ended: a peer that stopped answering would not complete a graceful close.
        // ioredis sees the socket close and reconnects as after any network error.
        connection.stream.destroy()
      })
      .finally(() => {
        clearTimeout(timer)
        pinging.delete(connection)
      })
  }

  return {
    transport: 'redis',
    get state() {
      return endpoint.state
    },
    start: () =>
      endpoint.start(
        () => {
          // A failed first attempt is retried by the retry strategy; `ready` reports success.
          subscriber.connect().catch(() => undefined)
          publisher.connect().catch(() => undefined)
          pingTimer = setInterval(() => {
            ping(subscriber, 'subscriber')
            ping(publisher, 'publisher')
          }, pingIntervalMs)
          pingTimer.unref()
        },
        startTimeoutMs,
        `redis bus not up within ${startTimeoutMs} ms; still reconnecting in the background`,
      ),
    async publish(message: BusMessage) {
      const line = endpoint.encodeForPublish(message)
      try {
        await publisher.publish(channel, line)
      } catch (err) {
        throw new StorageError('ES_UNAVAILABLE', 'redis publish failed', { cause: err })
      }
    },
    subscribe: (handler) => endpoint.subscribe(handler),
    onStateChange: (handler) => endpoint.onStateChange(handler),
    async close() {
      if (endpoint.closed) return
      endpoint.close()
      clearInterval(pingTimer)
      subscriber.disconnect()
      publisher.disconnect()
    },
  }
}
