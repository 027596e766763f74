import type { Bus } from '../../../../storage/bus/bus.js'
import { createPostgresBus } from '../../../../storage/bus/postgres-bus.js'
import { createRedisBus } from '../../../../storage/bus/redis-bus.js'
import type { Logger } from '../../../../storage/logger.js'

/** Which real transport a multi-process test runs over. */
export type Transport = 'redis' | 'postgres'

/** A bus over `transport` on the channel of `serverName`; `url` is the Redis or Postgres URL. */
export function createTransportBus(transport: Transport, url: string, serverName: string, log: Logger): Bus {
  return transport === 'redis'
    ? createRedisBus({ url, serverName, log })
    : createPostgresBus({ connectionString: url, serverName, log })
}
