import { Writable } from 'node:stream'
import type { FastifyInstance, FastifyPluginAsync, InjectOptions, LightMyRequestResponse } from 'fastify'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { buildApp, type BuildAppOptions } from '../../../api/app.js'
import { registrationMac } from '../../../api/routes/admin-register.js'
import { startProcess, type MyelinProcess } from '../../../api/process.js'
import type { RoomServices } from '../../../api/room-services.js'
import { parseConfig, type MyelinConfig } from '../../../storage/config.js'
import { redactPaths } from '../../../storage/logger.js'
import { createTestDatabase, type TestDatabase } from '../../support/db.js'

export const serverName = 'hs.test'
export const sharedSecret = 'shared-secret-for-tests-0123456789'

/** An api app over a fresh database, with every log line captured. */
export interface ApiHarness {
  readonly app: FastifyInstance
  readonly t: TestDatabase
  readonly config: MyelinConfig
  readonly metrics: Registry
  /** Every log line written so far (JSON text). */
  readonly logs: string[]
  /** The composed monolith process, when started with `roomRoutes`. */
  readonly process: MyelinProcess | undefined
  close(): Promise<void>
  /** `app.inject` with a JSON body and an optional access token (Bearer). */
  call(method: InjectOptions['method'], url: string, options?: { body?: unknown; raw?: string; token?: string; headers?: Record<string, string> }): Promise<LightMyRequestResponse>
  /** Registers a user through the dummy flow; returns the login response. */
  register(username: string, password?: string, extra?: Record<string, unknown>): Promise<Session>
  /** A server admin, registered with the shared secret (Synapse's admin registration). */
  registerAdmin(username: string): Promise<Session>
}

export interface Session {
  user_id: string
  access_token: string
  device_id: string
  home_server: string
}

export const v3 = '/_matrix/client/v3'

/**
 * An api app over a fresh database. With `roomRoutes`, the app is the client app of a whole
 * monolith process (api/process.ts: in-process bus, persister, stream tracker, direct sender)
 * serving those room routes; otherwise `buildApp` alone.
 *
 * @example
 * const h = await startApi({ roomRoutes: (services) => [roomWriteRoutes(services)] })
 * const alice = await h.register('alice')
 * const room = await h.call('POST', `${v3}/createRoom`, { token: alice.access_token, body: {} })
 */
export async function startApi(
  options: {
    registration?: Record<string, unknown>
    /** More configuration (top-level keys replace the defaults'). */
    config?: Record<string, unknown>
    plugins?: FastifyPluginAsync[]
    roomRoutes?: (services: RoomServices) => FastifyPluginAsync[]
    /** Another harness's database (a second process over it); its owner drops it. */
    database?: TestDatabase
  } & Omit<BuildAppOptions, 'logger' | 'plugins'> = {},
): Promise<ApiHarness> {
  const t = options.database ?? (await createTestDatabase())
  const config = parseConfig({
    server_name: serverName,
    database: { url: t.url },
    replication_secret: 'replication-secret-0123456789',
    signing_key: 'ed25519 a1 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=',
    registration: options.registration ?? { enabled: true, shared_secret: sharedSecret },
    // Tests send in bursts; the rate limit's own tests turn it on.
    rc_message: { per_second: 0 },
    ...options.config,
  })
  const logs: string[] = []
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      logs.push(...chunk.toString('utf8').split('\n').filter((l) => l !== ''))
      done()
    },
  })
  const log = pino({ level: 'trace', redact: { paths: redactPaths, censor: '[redacted]' } }, sink)
  const metrics = new Registry()
  const { registration: _r, config: _c, roomRoutes, database: shared, ...appOptions } = options
  const proc = roomRoutes === undefined ? undefined : await startProcess(config, { log, registry: metrics, database: t, roomRoutes })
  const app = proc?.clientApp ?? (await buildApp({ config, db: t.db, log, metrics }, appOptions))

  const call: ApiHarness['call'] = (method, url, opts = {}) => {
    const headers: Record<string, string> = { ...opts.headers }
    if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`
    const payload = opts.raw ?? (opts.body === undefined ? undefined : JSON.stringify(opts.body))
    if (payload !== undefined) headers['content-type'] ??= 'application/json'
    return app.inject({ method, url, headers, ...(payload !== undefined && { payload }) })
  }

  return {
    app,
    t,
    config,
    metrics,
    logs,
    process: proc,
    call,
    async registerAdmin(username) {
      const { nonce } = (await call('GET', '/_synapse/admin/v1/register')).json<{ nonce: string }>()
      const request = { nonce, username, password: `pw-${username}`, admin: true }
      const res = await call('POST', '/_synapse/admin/v1/register', { body: { ...request, mac: registrationMac(sharedSecret, request) } })
      if (res.statusCode !== 200) throw new Error(`register admin ${username}: ${res.statusCode} ${res.body}`)
      return res.json<Session>()
    },
    async register(username, password = 'correct horse battery', extra = {}) {
      const res = await call('POST', `${v3}/register`, { body: { username, password, auth: { type: 'm.login.dummy' }, ...extra } })
      if (res.statusCode !== 200) throw new Error(`register ${username}: ${res.statusCode} ${res.body}`)
      return res.json<Session>()
    },
    async close() {
      if (proc) await proc.close()
      else await app.close()
      if (shared === undefined) await t.drop()
    },
  }
}
