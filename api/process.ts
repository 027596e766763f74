import Fastify, { type FastifyInstance, type FastifyPluginAsync } from 'fastify'
import { collectDefaultMetrics, Registry } from 'prom-client'
import { createPersister, type Persister } from '../persisters/persister.js'
import { replicationRoutes } from '../persisters/replication-routes.js'
import { createShardMap, type ShardMap } from '../persisters/shard-map.js'
import { createBus, type Bus } from '../storage/bus/bus.js'
import { eventWriters, runsBackgroundTasks, type ListenerConfig, type MyelinConfig } from '../storage/config.js'
import { createDatabase, type DatabaseHandle } from '../storage/database.js'
import { setRetentionRule } from '../storage/history-purge.js'
import type { Logger } from '../storage/logger.js'
import { assertSchemaCompatible } from '../storage/migrations.js'
import { createIdGenerator, type MultiWriterIdGenerator } from '../storage/streams/id-generator.js'
import { createNotifier } from '../storage/streams/notifier.js'
import { createStreamTracker, type StreamTracker } from '../storage/streams/stream-tracker.js'
import { buildApp } from './app.js'
import { registerProcessGauges } from './process-metrics.js'
import { startBackgroundTasks, type BackgroundTasks } from './background.js'
import { startPushSender, type PushSender } from './push-sender.js'
import { startSearchIndexer, type SearchIndexer } from './search-indexer.js'
import { startRetention } from './retention.js'
import { createDirectSender, createOwnerFirstSender, type EventSender, type RoomServices } from './room-services.js'
import { roomPlugins } from './room-plugins.js'
import { createReplicationSender } from './replication-sender.js'

/** Options of `startProcess`. */
export interface StartProcessOptions {
  readonly log: Logger
  /** Registry for every metric of the process (default: a fresh one with Node's default metrics). */
  readonly registry?: Registry
  /** An already open database (tests); by default the process opens `config.database`. */
  readonly database?: DatabaseHandle
  /** The client API's room routes (default `roomPlugins`); tests of one route family pass their own. */
  readonly roomRoutes?: (services: RoomServices) => FastifyPluginAsync[]
}

/** One running Myelin process of any role (ARCHITECTURE §1). */
export interface MyelinProcess {
  readonly config: MyelinConfig
  readonly registry: Registry
  /** The client API app (roles main and api), for `inject` in tests. */
  readonly clientApp: FastifyInstance | undefined
  /** The event persister (event writers: roles main and persister). */
  readonly persister: Persister | undefined
  /** Room services of the client API (roles main and api). */
  readonly services: RoomServices | undefined
  /** The push sender (the process running the background tasks, unless `push.enabled` is false). */
  readonly pushSender: PushSender | undefined
  /** The search indexer (the process running the background tasks, unless `search.enabled` is false). */
  readonly searchIndexer: SearchIndexer | undefined
  /** The backfill stream's tracker the search indexer follows imported history with. */
  readonly backfillTracker: StreamTracker | undefined
  /**
   * Listens on every configured listener (a monolith without listeners gets one on
   * 127.0.0.1:8008 with every resource) and returns the bound ports in listener order.
   * `listeners` replaces the configured ones (tests listen on port 0).
   */
  listen(listeners?: readonly ListenerConfig[]): Promise<number[]>
  /**
   * Graceful shutdown: stops accepting requests, drains the persister's queues (in-flight
   * transactions finish and are answered), then closes trackers, generators, the bus and the
   * database. Idempotent.
   */
  close(): Promise<void>
}

/** Where a monolith without configured listeners serves everything. */
export const defaultListener: ListenerConfig = { port: 8008, bind_address: '127.0.0.1', resources: ['client', 'replication', 'metrics', 'health'] }

/**
 * Composes one process from its configuration: refuses to start on an incompatible schema,
 * then starts the bus, the event persister when this process is an event writer, the stream
 * tracker and the client API when it serves clients, and the background tasks when the config
 * names it. Nothing listens until `listen()`.
 *
 * Roles: `main` is the monolith (writer and API in one process; in-process bus unless an
 * `instance_map` makes it part of a multi-process deployment); `persister` writes events and
 * answers replication; `api` serves clients and sends events over replication; `background`
 * runs only the housekeeping tasks.
 *
 * @throws StorageError `ES_SCHEMA_MISMATCH` (pending migrations or a newer schema), `ES_UNAVAILABLE`.
 * @example
 * const proc = await startProcess(await loadConfig(['shared.yaml', 'api1.yaml']), { log })
 * const [port] = await proc.listen()
 * process.once('SIGTERM', () => void proc.close())
 */
export async function startProcess(config: MyelinConfig, options: StartProcessOptions): Promise<MyelinProcess> {
  const log = options.log.child({ worker: config.worker_name, role: config.worker_app })
  const registry = options.registry ?? defaultRegistry(config)
  const database = options.database ?? createDatabase({
      url: config.database.url,
      poolSize: config.database.pool_size,
      prepareStatements: config.database.prepare_statements,
      applicationName: `myelin-${config.worker_name}`,
    })
  const ownsDatabase = options.database === undefined
  const closers: (() => Promise<void>)[] = []
  const closeAll = async () => {
    for (const close of closers.splice(0).reverse()) {
      await close().catch((err: unknown) => log.error({ err }, 'shutdown step failed'))
    }
  }
  if (ownsDatabase) closers.push(() => database.close())

  try {
    await database.checkConnection()
    await assertSchemaCompatible(database.db)
    const { db } = database
    const writers = eventWriters(config)
    const multiProcess = Object.keys(config.instance_map).length > 0
    const shardMap = createShardMap({ writers, strategy: config.shard_strategy, pins: config.room_pins })
    const bus = createBus({
      ...(config.redis !== undefined && { redis: config.redis }),
      ...(multiProcess && { databaseUrl: config.database.url }),
      serverName: config.server_name,
      monolith: !multiProcess,
      log,
    })
    closers.push(() => bus.close())
    await startBus(bus, log)

    const isWriter = (config.worker_app === 'main' || config.worker_app === 'persister') && writers.includes(config.worker_name)
    const listeners = config.listeners.length > 0 ? config.listeners : config.worker_app === 'main' ? [defaultListener] : []
    // A persister with a client listener serves the sends the router gives it (its own rooms) directly.
    const servesClients =
      config.worker_app === 'main' || config.worker_app === 'api' || (config.worker_app === 'persister' && listeners.some((l) => l.resources.includes('client')))

    let persister: Persister | undefined
    const generators: MultiWriterIdGenerator[] = []
    if (isWriter) {
      const generator = async (stream: 'events' | 'backfill'): Promise<MultiWriterIdGenerator> => {
        const g = await createIdGenerator({ db, stream, writer: config.worker_name, writers, bus, log })
        closers.push(() => g.close())
        generators.push(g)
        return g
      }
      const [events, backfill] = [await generator('events'), await generator('backfill')]
      const created = createPersister({
        db,
        events,
        backfill,
        shardMap,
        writer: config.worker_name,
        serverName: config.server_name,
        signingKey: config.signing_key,
        log,
        maxBatch: config.persister.max_batch,
        roomConcurrency: config.persister.room_concurrency,
        transactionConcurrency: config.persister.transaction_concurrency,
        maxTransactionEvents: config.persister.max_transaction_events,
        parallelTransactionEvents: config.persister.parallel_transaction_events,
        gather: { ms: config.persister.gather_ms, events: config.persister.gather_events, afterEvents: config.persister.gather_after_events },
        registry,
      })
      persister = created
      closers.push(() => created.close())
    }

    let services: RoomServices | undefined
    let clientApp: FastifyInstance | undefined
    if (servesClients) {
      const tracker = createStreamTracker({ db, bus, log, name: config.worker_name, registry })
      await tracker.start()
      closers.push(() => tracker.close())
      const sender =
        persister === undefined
          ? remoteSender(config, shardMap, tracker, log, registry, closers)
          : multiProcess
            ? createOwnerFirstSender(persister, shardMap, tracker, remoteSender(config, shardMap, tracker, log, registry, closers))
            : createDirectSender(persister, tracker)
      services = { sender, tracker, notifier: createNotifier(tracker), shardMap }
      clientApp = await buildApp({ config, db, log, metrics: registry }, { plugins: (options.roomRoutes ?? roomPlugins)(services) })
    }

    registerProcessGauges(registry, { bus, generators, tracker: services?.tracker })

    let background: BackgroundTasks | undefined
    let pushSender: PushSender | undefined
    let searchIndexer: SearchIndexer | undefined
    let backfillTracker: StreamTracker | undefined
    if (runsBackgroundTasks(config)) {
      background = startBackgroundTasks({ db, log, registry })
      closers.push(() => background!.close())
      // The rule reads hide expired events by, for every process (none when retention is off).
      const { enabled, default_max_lifetime_ms, allowed_lifetime_min_ms, allowed_lifetime_max_ms } = config.retention
      await setRetentionRule(
        db,
        enabled ? { defaultMaxLifetimeMs: default_max_lifetime_ms, allowedLifetimeMinMs: allowed_lifetime_min_ms, allowedLifetimeMaxMs: allowed_lifetime_max_ms } : undefined,
      )
      if (enabled) {
        const retention = startRetention({ db, log, registry, config: config.retention, serverName: config.server_name })
        closers.push(() => retention.close())
      }
      // The stream followers below share the api's tracker, or one of their own.
      let tracker = services?.tracker
      const trackerForFollowers = async () => {
        if (tracker === undefined) {
          const own = createStreamTracker({ db, bus, log, name: config.worker_name, registry })
          await own.start()
          closers.push(() => own.close())
          tracker = own
        }
        return tracker
      }
      // Each is closed before the tracker (closers run in reverse).
      if (config.push.enabled) {
        const sender = startPushSender({ db, tracker: await trackerForFollowers(), log, config: config.push, registry })
        closers.push(() => sender.close())
        pushSender = sender
      }
      if (config.search.enabled) {
        // Imported history (negative stream orderings) is followed on the backfill stream.
        const backfill = createStreamTracker({ db, bus, stream: 'backfill', log, name: `${config.worker_name}-backfill`, registry })
        await backfill.start()
        closers.push(() => backfill.close())
        backfillTracker = backfill
        const indexer = startSearchIndexer({ db, tracker: await trackerForFollowers(), backfill, log, registry })
        closers.push(() => indexer.close())
        searchIndexer = indexer
      }
    }

    const servers: FastifyInstance[] = []
    let closing: Promise<void> | undefined

    return {
      config,
      registry,
      clientApp,
      persister,
      services,
      pushSender,
      searchIndexer,
      backfillTracker,
      async listen(chosen = listeners) {
        const ports: number[] = []
        for (const listener of chosen) {
          const server = await serverFor(listener, { clientApp, persister, config, registry, log })
          servers.push(server)
          await server.listen({ port: listener.port, host: listener.bind_address })
          const address = server.server.address()
          ports.push(typeof address === 'object' && address !== null ? address.port : listener.port)
        }
        log.info({ ports }, 'listening')
        return ports
      },
      close() {
        closing ??= (async () => {
          log.info('shutting down')
          // Stop taking requests first; in-flight requests finish before the persister drains.
          for (const server of servers.splice(0)) if (server !== clientApp) await server.close()
          if (clientApp) await clientApp.close()
          await closeAll()
          log.info('stopped')
        })()
        return closing
      },
    }
  } catch (err) {
    await closeAll()
    throw err
  }
}

/** A fresh registry with Node's default process metrics, labelled with the worker name. */
function defaultRegistry(config: MyelinConfig): Registry {
  const registry = new Registry()
  registry.setDefaultLabels({ worker: config.worker_name })
  collectDefaultMetrics({ register: registry })
  return registry
}

/** How long a starting process waits for the bus before it serves anyway (trackers poll meanwhile). */
const busStartWaitMs = 1_000

/**
 * Starts the bus, waiting at most `busStartWaitMs`: a process restarted during a bus outage must
 * serve its rooms at once (readers poll Postgres while the bus is down; it keeps reconnecting in
 * the background and every component catches up on its `up`).
 */
async function startBus(bus: Bus, log: Logger): Promise<void> {
  const started = bus.start().then(
    () => true,
    (err: unknown) => {
      log.warn({ err, transport: bus.transport }, 'bus not reachable at startup; polling Postgres until it is')
      return false
    },
  )
  const up = await Promise.race([started, new Promise<false>((resolve) => setTimeout(() => resolve(false), busStartWaitMs).unref())])
  if (!up && bus.state !== 'up') log.warn({ transport: bus.transport, waitedMs: busStartWaitMs }, 'starting without the bus; it keeps reconnecting')
}

function remoteSender(
  config: MyelinConfig,
  shardMap: ShardMap,
  tracker: StreamTracker,
  log: Logger,
  registry: Registry,
  closers: (() => Promise<void>)[],
): EventSender {
  const sender = createReplicationSender({ instanceMap: config.instance_map, secret: config.replication_secret, shardMap, tracker, log, registry })
  closers.push(() => sender.close())
  return sender
}

/**
 * The server of one listener: the client app itself when the listener serves clients (the other
 * resources are routes on it), else a bare fastify with the listener's resources.
 */
async function serverFor(
  listener: ListenerConfig,
  parts: { clientApp: FastifyInstance | undefined; persister: Persister | undefined; config: MyelinConfig; registry: Registry; log: Logger },
): Promise<FastifyInstance> {
  const wants = new Set(listener.resources)
  const plugins: FastifyPluginAsync[] = []
  if (wants.has('replication') && parts.persister) {
    const persister = parts.persister
    plugins.push(async (app) => app.register(replicationRoutes, { persister, replicationSecret: parts.config.replication_secret }))
  }
  if (wants.has('metrics')) plugins.push(metricsRoute(parts.registry))
  if (wants.has('health')) plugins.push(healthRoute)
  if (wants.has('client') && parts.clientApp) {
    // The client app is built once; only its first client listener may add routes before it listens.
    for (const plugin of plugins) await parts.clientApp.register(plugin)
    return parts.clientApp
  }
  const server = Fastify({ loggerInstance: parts.log.child({ component: 'http', listener: listener.port }), disableRequestLogging: true }) as unknown as FastifyInstance
  for (const plugin of plugins) await server.register(plugin)
  return server
}

function metricsRoute(registry: Registry): FastifyPluginAsync {
  return async (app) => {
    app.get('/metrics', async (_request, reply) => {
      reply.header('content-type', registry.contentType)
      return registry.metrics()
    })
  }
}

const healthRoute: FastifyPluginAsync = async (app) => {
  app.get('/health', async (_request, reply) => reply.type('text/plain').send('OK'))
}

