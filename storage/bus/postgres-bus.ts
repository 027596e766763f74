import { createHash } from 'node:crypto'
import pg from 'pg'
import createSubscriberModule from 'pg-listen'
import { StorageError } from '../errors.js'
import type { Logger } from '../logger.js'
import type { Bus } from './bus.js'
import { BusEndpoint, reconnectBackoff } from './bus-endpoint.js'
import type { BusMessage } from './bus-message.js'

/** Under NodeNext the CommonJS default export is `.default` of the module object (pg-listen assigns both). */
const createSubscriber = createSubscriberModule.default
type Subscriber = ReturnType<typeof createSubscriber>

/** Options of `createPostgresBus`. Durations in milliseconds. */
export interface PostgresBusOptions {
  connectionString: string
  serverName: string
  log: Logger
  /** Connect and NOTIFY timeout of a publish; default 5,000. */
  publishTimeoutMs?: number
  /** Cap of the exponential reconnect backoff of the LISTEN connection; default 2,000. */
  maxReconnectDelayMs?: number
  /** Interval of the health-check query on the LISTEN connection (pg-listen "paranoid checking"); default 30,000. */
  pingIntervalMs?: number
  /** How long `start()` waits for the first `up`; default 10,000. */
  startTimeoutMs?: number
}

/** `application_name` of the LISTEN connection, to find it in `pg_stat_activity`. */
export const postgresBusListenApplicationName = 'myelin-bus-listen'

/** `application_name` of the NOTIFY connection. */
export const postgresBusNotifyApplicationName = 'myelin-bus-notify'

/**
 * The NOTIFY channel of a homeserver: `myelin_` and 32 hex digits of the SHA-256 of the server
 * name. Channels are identifiers of at most 63 bytes, and server names may be longer or hold
 * characters identifiers cannot.
 *
 * @example
 * postgresBusChannel('example.org') // 'myelin_' + 32 lowercase hex digits
 */
export function postgresBusChannel(serverName: string): string {
  return `myelin_${createHash('sha256').update(serverName, 'utf8').digest('hex').slice(0, 32)}`
}

/**
 * A bus over Postgres LISTEN/NOTIFY, for deployments without Redis: one dedicated LISTEN
 * connection (pg-listen) and a one-connection pool for `SELECT pg_notify($1, $2)`. NOTIFY is
 * delivered to every listening session, the publisher's own process included.
 *
 * Order: the notify pool has exactly one connection and hands it out in FIFO order, and each
 * NOTIFY commits on its own, so messages of one bus arrive in publish order.
 *
 * State: `up` once LISTEN is active; `down` when pg-listen starts reconnecting (connection
 * ended, errored, or a failed health check). Reconnects run forever with capped backoff: the
 * first connection by this module, later ones by pg-listen, which re-issues LISTEN before
 * reporting `connected`. If pg-listen gives up (it does only when re-issuing LISTEN fails),
 * this module replaces the subscriber. `down` does not stop publishing, which goes through
 * its own connection: a publish rejects when that connection cannot be made within
 * `publishTimeoutMs`.
 *
 * @example
 * const bus = createPostgresBus({ connectionString: 'postgres://myelin@db/myelin', serverName: 'example.org', log })
 * await bus.start()
 * await bus.publish({ type: 'POSITION', stream: 'events', writer: 'persister1', prev: 7n, next: 9n })
 */
export function createPostgresBus(options: PostgresBusOptions): Bus {
  const log = options.log.child({ component: 'bus', transport: 'postgres' })
  const channel = postgresBusChannel(options.serverName)
  const publishTimeoutMs = options.publishTimeoutMs ?? 5000
  const maxReconnectDelayMs = options.maxReconnectDelayMs ?? 2000
  const pingIntervalMs = options.pingIntervalMs ?? 30_000
  const startTimeoutMs = options.startTimeoutMs ?? 10_000
  const endpoint = new BusEndpoint(log)
  const backoff = reconnectBackoff(maxReconnectDelayMs)

  const pool = new pg.Pool({
    connectionString: options.connectionString,
    application_name: postgresBusNotifyApplicationName,
    max: 1,
    connectionTimeoutMillis: publishTimeoutMs,
    query_timeout: publishTimeoutMs,
    idleTimeoutMillis: 60_000,
  })
  pool.on('error', (err) => log.debug({ err }, 'idle notify connection lost'))

  /** The subscriber whose LISTEN is (or is being) established; others are closed on sight. */
  let current: Subscriber | undefined
  let retryTimer: NodeJS.Timeout | undefined

  /** Subscribers whose first LISTEN succeeded; only their `connected` events mean `up`. */
  const listening = new WeakSet<Subscriber>()

  const newSubscriber = (): Subscriber => {
    const subscriber = createSubscriber(
      {
        connectionString: options.connectionString,
        application_name: postgresBusListenApplicationName,
        connectionTimeoutMillis: publishTimeoutMs,
      },
      {
        parse: (payload: string) => payload,
        serialize: (payload: string) => payload,
        // Throwing ends pg-listen's reconnect loop, which does not check for close() itself.
        retryInterval: (attempt: number) => {
          if (endpoint.closed || subscriber !== current) throw new Error('bus closed')
          return backoff(attempt)
        },
        retryTimeout: 0,
        paranoidChecking: pingIntervalMs,
      },
    )
    subscriber.events.on('notification', (notification) => {
      if (subscriber === current && notification.channel === channel) endpoint.deliverLine(notification.payload)
    })
    subscriber.events.on('connected', () => {
      if (endpoint.closed || subscriber !== current) {
        // A reconnect pg-listen completed for a subscriber given up meanwhile (its reconnect
        // loop may even start after a failed first connect): close the new connection.
        subscriber.close().catch(() => undefined)
        return
      }
      // pg-listen also emits `connected` on the first connect, before LISTEN: not up yet.
      if (listening.has(subscriber)) endpoint.setState('up')
    })
    subscriber.events.on('reconnect', (attempt) => {
      if (subscriber !== current) return
      if (attempt === 1) log.warn('LISTEN connection lost; reconnecting')
      endpoint.setState('down')
    })
    subscriber.events.on('error', (err) => {
      if (subscriber !== current || endpoint.closed) return
      // pg-listen emits `error` only when it has given up reconnecting: start over.
      log.warn({ err }, 'LISTEN connection failed; replacing it')
      endpoint.setState('down')
      current = undefined
      subscriber.close().catch(() => undefined)
      scheduleConnect(0)
    })
    return subscriber
  }

  const connectOnce = async (attempt: number): Promise<void> => {
    retryTimer = undefined
    if (endpoint.closed) return
    const subscriber = newSubscriber()
    current = subscriber
    try {
      await subscriber.connect()
      await subscriber.listenTo(channel)
    } catch (err) {
      if (current === subscriber) current = undefined
      subscriber.close().catch(() => undefined)
      if (endpoint.closed) return
      if (attempt === 0) log.warn({ err }, 'cannot LISTEN; retrying')
      else log.debug({ err, attempt }, 'cannot LISTEN; retrying')
      scheduleConnect(attempt + 1)
      return
    }
    if (endpoint.closed || current !== subscriber) {
      subscriber.close().catch(() => undefined)
      return
    }
    listening.add(subscriber)
    endpoint.setState('up')
  }

  const scheduleConnect = (attempt: number): void => {
    retryTimer = setTimeout(() => void connectOnce(attempt), attempt === 0 ? 0 : backoff(attempt))
  }

  return {
    transport: 'postgres',
    get state() {
      return endpoint.state
    },
    start: () => endpoint.start(() => void connectOnce(0), startTimeoutMs, `postgres bus not up within ${startTimeoutMs} ms; still reconnecting in the background`),
    async publish(message: BusMessage) {
      const line = endpoint.encodeForPublish(message)
      try {
        await pool.query('SELECT pg_notify($1, $2)', [channel, line])
      } catch (err) {
        throw new StorageError('ES_UNAVAILABLE', 'postgres NOTIFY failed', { cause: err })
      }
    },
    subscribe: (handler) => endpoint.subscribe(handler),
    onStateChange: (handler) => endpoint.onStateChange(handler),
    async close() {
      if (endpoint.closed) return
      endpoint.close()
      clearTimeout(retryTimer)
      const subscriber = current
      current = undefined
      await Promise.allSettled([subscriber?.close(), pool.end()])
    },
  }
}
