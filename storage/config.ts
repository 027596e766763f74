import { readFile } from 'node:fs/promises'
import { isIP } from 'node:net'
import { parse as parseYaml, YAMLParseError } from 'yaml'
import { z } from 'zod'
import { StorageError } from './errors.js'

/**
 * Myelin's configuration: one shared YAML file (every process reads it) plus, optionally, a
 * per-process worker file that sets `worker_name`, `worker_app` and `listeners` and may override
 * anything else. Keys follow Synapse where the concept is the same, so an operator who knows
 * Synapse's worker mode recognizes them.
 */

/** A size thumbnails are made at (config `media.thumbnail_sizes`). */
export interface ThumbnailSize {
  readonly width: number
  readonly height: number
  readonly method: 'crop' | 'scale'
}

/** Synapse's default `thumbnail_sizes`. */
export const defaultThumbnailSizes: readonly ThumbnailSize[] = [
  { width: 32, height: 32, method: 'crop' },
  { width: 96, height: 96, method: 'crop' },
  { width: 320, height: 240, method: 'scale' },
  { width: 640, height: 480, method: 'scale' },
  { width: 800, height: 600, method: 'scale' },
]

/** What a database URL and a Redis URL must look like (the CLI's flags check the same). */
export const postgresUrlPattern = /^postgres(ql)?:\/\//
export const redisUrlPattern = /^rediss?:\/\//

/** Synapse's default `ip_range_blocklist`: loopback, private, link-local, shared, documentation and multicast ranges. */
export const defaultIpRangeBlocklist = [
  '127.0.0.0/8', '10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '100.64.0.0/10', '192.0.0.0/24', '169.254.0.0/16',
  '192.88.99.0/24', '198.18.0.0/15', '192.0.2.0/24', '198.51.100.0/24', '203.0.113.0/24', '224.0.0.0/4', '0.0.0.0/8',
  '::1/128', 'fe80::/10', 'fc00::/7', '2001:db8::/32', 'ff00::/8', 'fec0::/10', '::/128',
] as const

/** Whether `text` is `address/prefix` of IPv4 (prefix ≤ 32) or IPv6 (≤ 128). */
export function isCidr(text: string): boolean {
  const [address, prefix, ...rest] = text.split('/')
  if (rest.length > 0 || address === undefined || prefix === undefined || !/^[0-9]{1,3}$/.test(prefix)) return false
  const family = isIP(address)
  return family !== 0 && Number(prefix) <= (family === 4 ? 32 : 128)
}

const listenerSchema = z.strictObject({
  port: z.number().int().min(0).max(65535),
  bind_address: z.string().min(1).default('127.0.0.1'),
  /** `client` (Matrix client-server API), `replication` (/_myelin/replication), `metrics`, `health`. */
  resources: z
    .array(z.enum(['client', 'replication', 'metrics', 'health']))
    .min(1)
    .default(['client', 'replication', 'metrics', 'health']),
})

const instanceSchema = z.strictObject({
  host: z.string().min(1),
  port: z.number().int().min(1).max(65535),
  tls: z.boolean().default(false),
})

const configSchema = z
  .strictObject({
    server_name: z
      .string()
      .min(1)
      .regex(/^[A-Za-z0-9.\-:[\]]+$/, 'must be a hostname with an optional port'),
    database: z.strictObject({
      url: z.string().regex(postgresUrlPattern, 'must be a postgres:// URL'),
      pool_size: z.number().int().min(1).max(200).default(10),
      /** Named prepared statements (storage/database.ts); false behind pgbouncer's transaction mode before 1.21. */
      prepare_statements: z.boolean().default(true),
    }),
    redis: z
      .strictObject({
        url: z.string().regex(redisUrlPattern, 'must be a redis:// URL').optional(),
        sentinels: z.array(z.strictObject({ host: z.string().min(1), port: z.number().int() })).optional(),
        sentinel_name: z.string().min(1).optional(),
      })
      .refine((r) => r.url !== undefined || (r.sentinels !== undefined && r.sentinel_name !== undefined), {
        message: 'set either url, or sentinels together with sentinel_name',
      })
      .optional(),
    /** Shared secret for /_myelin/replication; every process of a deployment needs the same one. */
    replication_secret: z.string().min(16, 'must be at least 16 characters'),
    /** `ed25519 <version> <base64 seed>` (Synapse's signing key file format). */
    signing_key: z.string().trim().regex(/^ed25519 [A-Za-z0-9_]+ [A-Za-z0-9+/=]+$/, 'must look like "ed25519 <version> <base64 seed>"'),
    /** Where each named process answers replication requests. */
    instance_map: z.record(z.string().min(1), instanceSchema).default({}),
    stream_writers: z
      .strictObject({
        events: z.array(z.string().min(1)).min(1),
      })
      .optional(),
    shard_strategy: z.enum(['rendezvous', 'modulo']).default('rendezvous'),
    room_pins: z.record(z.string().regex(/^!/, 'room IDs start with !'), z.string().min(1)).default({}),
    run_background_tasks_on: z.string().min(1).optional(),
    worker_name: z.string().min(1).regex(/^[A-Za-z0-9_.-]+$/, 'letters, digits, _ . - only').default('main'),
    worker_app: z.enum(['main', 'persister', 'api', 'background']).default('main'),
    listeners: z.array(listenerSchema).default([]),
    registration: z
      .strictObject({
        enabled: z.boolean().default(true),
        /** Signing up needs a registration token (`m.login.registration_token`) a server admin made. */
        requires_token: z.boolean().default(false),
        shared_secret: z.string().min(16).optional(),
      })
      .default({ enabled: true, requires_token: false }),
    /** Presence (storage/presence.ts); large deployments often turn it off to save its writes. */
    presence: z.strictObject({ enabled: z.boolean().default(true) }).default({ enabled: true }),
    /** The content repository (api/routes/media.ts): the largest upload, and thumbnails. */
    media: z
      .strictObject({
        max_upload_bytes: z.number().int().positive().max(1024 * 1024 * 1024).default(50 * 1024 * 1024),
        /** The sizes thumbnails are made at (Synapse's `thumbnail_sizes`); a request gets the nearest larger one. */
        thumbnail_sizes: z
          .array(z.strictObject({ width: z.number().int().min(1).max(4096), height: z.number().int().min(1).max(4096), method: z.enum(['crop', 'scale']) }))
          .max(32)
          .default(defaultThumbnailSizes.map((s) => ({ ...s }))),
        /** Images declaring more pixels are not thumbnailed (the file serves as its own); Synapse's `max_image_pixels`. */
        max_image_pixels: z.number().int().positive().default(32_000_000),
      })
      .default({ max_upload_bytes: 50 * 1024 * 1024, thumbnail_sizes: defaultThumbnailSizes.map((s) => ({ ...s })), max_image_pixels: 32_000_000 }),
    /**
     * Message retention (Synapse's `retention`): reads hide the events older than a room's
     * `max_lifetime` (its `m.room.retention` state, clamped to the allowed bounds, else
     * `default_max_lifetime_ms`), and the background process purges them every
     * `purge_interval_ms`; state events and each room's latest event stay (api/retention.ts).
     */
    retention: z
      .strictObject({
        enabled: z.boolean().default(false),
        default_max_lifetime_ms: z.number().int().positive().optional(),
        allowed_lifetime_min_ms: z.number().int().positive().optional(),
        allowed_lifetime_max_ms: z.number().int().positive().optional(),
        purge_interval_ms: z.number().int().min(1000).default(24 * 60 * 60 * 1000),
      })
      .refine((r) => r.allowed_lifetime_min_ms === undefined || r.allowed_lifetime_max_ms === undefined || r.allowed_lifetime_min_ms <= r.allowed_lifetime_max_ms, {
        message: 'allowed_lifetime_min_ms must not be above allowed_lifetime_max_ms',
        path: ['allowed_lifetime_min_ms'],
      })
      .default({ enabled: false, purge_interval_ms: 24 * 60 * 60 * 1000 }),
    /** Server-side search (`POST /search`): its index is filled by the background process (api/search-indexer.ts). */
    search: z.strictObject({ enabled: z.boolean().default(true) }).default({ enabled: true }),
    /** Push notifications to push gateways (api/push-sender.ts, on the background process). */
    push: z
      .strictObject({
        enabled: z.boolean().default(true),
        /** First wait before a failed gateway is tried again; doubles per failure up to `retry_max_ms`. */
        retry_initial_ms: z.number().int().positive().default(1000),
        retry_max_ms: z.number().int().positive().default(60 * 60 * 1000),
        /** A notification a gateway failed to take for this long is dropped, so that the pusher moves on. */
        give_up_after_ms: z.number().int().positive().default(24 * 60 * 60 * 1000),
        timeout_ms: z.number().int().positive().default(10_000),
        /** Addresses gateways may not resolve to (CIDR), as Synapse's `ip_range_blocklist`: private and special ranges. */
        ip_range_blocklist: z.array(z.string().refine(isCidr, 'must be an IPv4 or IPv6 CIDR range such as 10.0.0.0/8')).default([...defaultIpRangeBlocklist]),
      })
      .default({
        enabled: true,
        retry_initial_ms: 1000,
        retry_max_ms: 60 * 60 * 1000,
        give_up_after_ms: 24 * 60 * 60 * 1000,
        timeout_ms: 10_000,
        ip_range_blocklist: [...defaultIpRangeBlocklist],
      }),
    /**
     * Synapse's `rc_message`: events a user may send through the client API (messages, state,
     * redactions) per second, with bursts of `burst_count`, counted per process. `per_second: 0`
     * turns the limit off; the admin API's `override_ratelimit` changes it per user.
     */
    rc_message: z
      .strictObject({ per_second: z.number().min(0).default(0.2), burst_count: z.number().min(0).default(10) })
      .default({ per_second: 0.2, burst_count: 10 }),
    log_level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    persister: z
      .strictObject({
        max_batch: z.number().int().min(1).max(1000).default(200),
        room_concurrency: z.number().int().min(1).max(256).default(32),
        transaction_concurrency: z.number().int().min(1).max(64).default(4),
        max_transaction_events: z.number().int().min(1).max(10_000).default(1000),
        parallel_transaction_events: z.number().int().min(0).max(10_000).default(100),
        gather_ms: z.number().min(0).max(100).default(4),
        gather_events: z.number().int().min(1).max(10_000).default(48),
        gather_after_events: z.number().int().min(1).max(10_000).default(4),
      })
      .default({
        max_batch: 200,
        room_concurrency: 32,
        transaction_concurrency: 4,
        max_transaction_events: 1000,
        parallel_transaction_events: 100,
        gather_ms: 4,
        gather_events: 48,
        gather_after_events: 4,
      }),
  })
  // The cross-references run even when other fields failed, so that every problem is listed at
  // once: the value may then be partly invalid, and is read defensively.
  .superRefine(
    (config, ctx) => {
      const raw = config as unknown as Record<string, unknown>
      const objectAt = (value: unknown): Record<string, unknown> => (isPlainObject(value) ? value : {})
      const workerName = typeof raw['worker_name'] === 'string' ? raw['worker_name'] : 'main'
      const listed = objectAt(raw['stream_writers'])['events']
      const events = Array.isArray(listed) ? (listed as unknown[]) : undefined
      const writers = events ? events.filter((w): w is string => typeof w === 'string') : [workerName]
      for (const [room, writer] of Object.entries(objectAt(raw['room_pins']))) {
        if (typeof writer === 'string' && !writers.includes(writer)) {
          ctx.addIssue({ code: 'custom', path: ['room_pins', room], message: `pins to "${writer}", which is not in stream_writers.events` })
        }
      }
      if (events) {
        const instances = objectAt(raw['instance_map'])
        const multiProcess = Object.keys(instances).length > 0
        const seen = new Set<string>()
        events.forEach((writer, i) => {
          if (typeof writer !== 'string') return
          if (seen.has(writer)) ctx.addIssue({ code: 'custom', path: ['stream_writers', 'events', i], message: `"${writer}" is listed twice` })
          seen.add(writer)
          if (multiProcess && !(writer in instances)) {
            ctx.addIssue({ code: 'custom', path: ['stream_writers', 'events', i], message: `"${writer}" has no instance_map entry` })
          }
        })
      }
      if (raw['worker_app'] === 'persister' && !writers.includes(workerName)) {
        ctx.addIssue({ code: 'custom', path: ['worker_name'], message: `persister "${workerName}" is not in stream_writers.events` })
      }
      // What the process must listen for: an api worker for clients; a persister other
      // processes reach through instance_map, for replication on the port named there.
      const listeners = (Array.isArray(raw['listeners']) ? (raw['listeners'] as unknown[]) : []).filter(isPlainObject)
      const serves = (resource: string) =>
        listeners.filter((l) => !Array.isArray(l['resources']) || (l['resources'] as unknown[]).includes(resource)).map((l) => l['port'])
      if (raw['worker_app'] === 'api' && serves('client').length === 0) {
        ctx.addIssue({ code: 'custom', path: ['listeners'], message: `api worker "${workerName}" has no listener with the client resource` })
      }
      const reachedAt = objectAt(objectAt(raw['instance_map'])[workerName])['port']
      if (raw['worker_app'] === 'persister' && typeof reachedAt === 'number') {
        const ports = serves('replication')
        if (!ports.includes(reachedAt) && !ports.includes(0)) {
          ctx.addIssue({
            code: 'custom',
            path: ['listeners'],
            message: `persister "${workerName}" is reached at port ${reachedAt} (instance_map) but has no listener there with the replication resource`,
          })
        }
      }
    },
    { when: () => true },
  )

export type MyelinConfig = z.output<typeof configSchema>
export type ListenerConfig = z.output<typeof listenerSchema>
export type WorkerApp = MyelinConfig['worker_app']

/** The event writers of a config: `stream_writers.events`, or the process itself (monolith). */
export function eventWriters(config: MyelinConfig): string[] {
  return config.stream_writers?.events ?? [config.worker_name]
}

/** Whether this process runs the background tasks (exactly one process of a deployment does). */
export function runsBackgroundTasks(config: MyelinConfig): boolean {
  return (config.run_background_tasks_on ?? 'main') === config.worker_name
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/** Worker-file keys override shared-file keys; nested maps merge, lists replace. */
export function mergeConfigLayers(...layers: Record<string, unknown>[]): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const layer of layers) {
    for (const [key, value] of Object.entries(layer)) {
      const current = out[key]
      out[key] = isPlainObject(current) && isPlainObject(value) ? mergeConfigLayers(current, value) : value
    }
  }
  return out
}

function formatPath(path: PropertyKey[]): string {
  if (path.length === 0) return '(top level)'
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? String(p) : `.${String(p)}`)).join('')
}

/**
 * Validates a merged raw config. Every problem is reported at once, one line each, with the
 * key path, so an operator fixes the file in one pass.
 */
export function parseConfig(raw: unknown, env: NodeJS.ProcessEnv = process.env): MyelinConfig {
  const layered = isPlainObject(raw) ? { ...raw } : raw
  if (isPlainObject(layered)) {
    // Environment overrides for the two URLs that differ per deployment (containers, CI).
    if (env.MYELIN_DATABASE_URL) layered.database = { ...(isPlainObject(layered.database) ? layered.database : {}), url: env.MYELIN_DATABASE_URL }
    if (env.MYELIN_REDIS_URL) layered.redis = { ...(isPlainObject(layered.redis) ? layered.redis : {}), url: env.MYELIN_REDIS_URL }
  }
  const result = configSchema.safeParse(layered)
  if (result.success) return result.data
  const problems = result.error.issues.map((issue) => {
    if (issue.code === 'unrecognized_keys') {
      return issue.keys.map((key) => `${formatPath([...issue.path, key])}: unknown key`)
    }
    return [`${formatPath(issue.path)}: ${issue.message}`]
  })
  throw new ConfigError(problems.flat())
}

/** A config that failed validation; `problems` holds one line per mistake. */
export class ConfigError extends StorageError {
  constructor(readonly problems: string[]) {
    super('ES_CONFIG_INVALID', `invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`)
  }
}

/** Reads and merges the given YAML files (shared first, worker files after) and validates them. */
export async function loadConfig(files: string[], env: NodeJS.ProcessEnv = process.env): Promise<MyelinConfig> {
  return parseConfig(mergeConfigLayers(...(await readConfigLayers(files))), env)
}

/**
 * The YAML mappings of `files`, unchecked; every unreadable or malformed file is listed in one
 * ConfigError.
 *
 * @example
 * const [shared, worker] = await readConfigLayers(['shared.yaml', 'worker.yaml'])
 */
export async function readConfigLayers(files: readonly string[]): Promise<Record<string, unknown>[]> {
  const layers: Record<string, unknown>[] = []
  const problems: string[] = []
  for (const file of files) {
    let text: string
    try {
      text = await readFile(file, 'utf8')
    } catch (err) {
      problems.push(`${file}: cannot read (${(err as NodeJS.ErrnoException).code ?? String(err)})`)
      continue
    }
    try {
      const doc: unknown = parseYaml(text) ?? {}
      if (!isPlainObject(doc)) problems.push(`${file}: must be a YAML mapping of keys to values`)
      else layers.push(doc)
    } catch (err) {
      const where = err instanceof YAMLParseError && err.linePos ? ` at line ${err.linePos[0].line}` : ''
      problems.push(`${file}: not valid YAML${where}: ${(err as Error).message.split('\n')[0]}`)
    }
  }
  if (problems.length > 0) throw new ConfigError(problems)
  return layers
}
