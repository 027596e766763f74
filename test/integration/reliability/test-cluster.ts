import { randomBytes } from 'node:crypto'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { expect } from 'chai'
import { parse as parseYaml } from 'yaml'
import { createShardMap, type ShardMap } from '../../../persisters/shard-map.js'
import { parseConfig } from '../../../storage/config.js'
import { jsonLine, startMyelin, type StartedChild } from '../../support/cli.js'
import { newRoomId, persistOnce, textMessage, untilOk, type ReplicationTarget } from './replication-client.js'

/** A `myelin cluster` under test, and a Matrix client's writes to it. */

/**
 * Registers `username` through the client API (`m.login.dummy`).
 *
 * @example
 * const alice = await register(clientUrl, 'alice')
 */
export async function register(base: string, username: string): Promise<{ access_token: string; user_id: string; device_id: string }> {
  const res = await fetch(`${base}/_matrix/client/v3/register`, {
    method: 'POST',
    body: JSON.stringify({ username, password: 'correct horse battery', auth: { type: 'm.login.dummy' } }),
  })
  expect(res.status, 'register').to.equal(200)
  return (await res.json()) as { access_token: string; user_id: string; device_id: string }
}

/** The ready line of `myelin cluster`. */
export interface ClusterReady {
  readonly ready: true
  readonly client_url: string
  readonly processes: readonly { readonly name: string; readonly role: string; readonly pid: number; readonly port: number }[]
}

/** A running `myelin cluster` and what its generated config says about its persisters. */
export interface TestCluster {
  readonly run: StartedChild<ClusterReady>
  readonly serverName: string
  readonly shardMap: ShardMap
  /** Each persister's replication endpoint, by writer name (fixed ports: they survive restarts). */
  readonly persisters: ReadonlyMap<string, ReplicationTarget>
  /** The pid of the first start of a child (from the ready line). */
  pidOf(name: string): number
  /** How often the supervisor logged that child `name` exited and is being restarted. */
  restartsOf(name: string): number
  /** SIGTERMs the cluster and expects a clean exit. */
  stop(): Promise<void>
}

/**
 * Starts `myelin cluster --database URL --redis URL --persisters N --api-workers 1 --port 0
 * --data DIR [--config FILE…]` and reads the generated `DIR/config/shared.yaml`.
 *
 * @example
 * const cluster = await startTestCluster({ databaseUrl: t.url, redisUrl: redisUrl(), dataDir: dir })
 * const target = cluster.persisters.get(cluster.shardMap.ownerOf(roomId))!
 */
export async function startTestCluster(options: { databaseUrl: string; redisUrl: string; dataDir: string; persisters?: number; configFiles?: readonly string[] }): Promise<TestCluster> {
  // Loads and clients send in bursts: without the message rate limit (a config file may set it).
  await mkdir(options.dataDir, { recursive: true })
  const noRateLimit = join(options.dataDir, 'no-rate-limit.yaml')
  await writeFile(noRateLimit, 'rc_message: { per_second: 0 }\n')
  const run = await startMyelin<ClusterReady>(
    [
      'cluster', '--database', options.databaseUrl, '--redis', options.redisUrl, '--persisters', String(options.persisters ?? 2), '--api-workers', '1', '--port', '0', '--data', options.dataDir,
      ...[noRateLimit, ...(options.configFiles ?? [])].flatMap((file) => ['--config', file]),
    ],
    (line) => (jsonLine(line)?.['ready'] === true ? (jsonLine(line) as unknown as ClusterReady) : undefined),
  )
  const config = parseConfig(parseYaml(await readFile(join(options.dataDir, 'config', 'shared.yaml'), 'utf8')))
  const writers = config.stream_writers?.events ?? []
  return {
    run,
    serverName: config.server_name,
    shardMap: createShardMap({ writers, strategy: config.shard_strategy, pins: config.room_pins }),
    persisters: new Map(
      writers.map((w) => {
        const instance = config.instance_map[w]!
        return [w, { base: `http://${instance.host}:${instance.port}`, secret: config.replication_secret }]
      }),
    ),
    pidOf(name) {
      const found = run.ready.processes.find((p) => p.name === name)
      if (!found) throw new Error(`no process ${name}`)
      return found.pid
    },
    restartsOf(name) {
      return run.output.filter((line) => {
        const entry = jsonLine(line)
        return entry?.['msg'] === 'child exited; restarting' && entry['worker'] === name
      }).length
    },
    async stop() {
      run.child.kill('SIGTERM')
      expect(await run.exited, 'cluster exit').to.equal(0)
    },
  }
}

/**
 * Room IDs of `cluster.serverName`, `perWriter` owned by each persister.
 *
 * @example
 * const rooms = roomsOnEveryWriter(cluster, 3) // 6 rooms with 2 persisters
 */
export function roomsOnEveryWriter(cluster: TestCluster, perWriter: number): string[] {
  const rooms: string[] = []
  for (const writer of cluster.persisters.keys()) {
    let mine = 0
    while (mine < perWriter) {
      const roomId = newRoomId(cluster.serverName)
      if (cluster.shardMap.ownerOf(roomId) !== writer) continue
      rooms.push(roomId)
      mine += 1
    }
  }
  return rooms
}

/**
 * Sends one message as a Matrix client would through an api worker: every attempt is a new
 * replication request (fresh request ID) carrying the same client txn, repeated until 200.
 * Goes straight to the room's owner persister, so the test sees every failed attempt (the
 * client API path, `apiSend`, hides them behind the router and api worker). Answers the event
 * ID and how many attempts it took.
 *
 * @example
 * const { eventId } = await clientSend(cluster, roomId, alice, { deviceId: 'DEV', txnId: 't1' }, 'hello')
 */
export async function clientSend(
  cluster: TestCluster,
  roomId: string,
  sender: string,
  txn: { deviceId: string; txnId: string },
  body: string,
): Promise<{ eventId: string; attempts: number }> {
  const target = cluster.persisters.get(cluster.shardMap.ownerOf(roomId))!
  let attempts = 0
  const [event] = await untilOk(() => {
    attempts += 1
    return persistOnce(target, `${txn.txnId}-${randomBytes(6).toString('hex')}`, roomId, [textMessage(sender, body, txn)])
  })
  return { eventId: event!.event_id, attempts }
}

/** One attempt of `apiSend`: its answer (`status` undefined: transport error or timeout) and timing. */
export interface SendAttempt {
  readonly txnId: string
  readonly startedAt: number
  readonly endedAt: number
  readonly status: number | undefined
  /** The parsed JSON answer (undefined when there was none or it was not JSON). */
  readonly body: unknown
  /** The transport error's message (and cause), when there was no answer. */
  readonly error?: string
}

/**
 * `PUT /_matrix/client/v3/rooms/{roomId}/send/m.room.message/{txnId}` as a Matrix client does
 * it: repeated with the same txn ID until 200 (any 4xx fails the test). Answers the event ID.
 * `onAttempt` sees every attempt; with `honorRetryAfter` the client waits an answer's
 * `retry_after_ms` (else 50 ms) before the next one; an attempt is given up after
 * `attemptTimeoutMs` (default 15 s).
 *
 * @example
 * const eventId = await apiSend(clientUrl, token, roomId, 't1', 'hello')
 */
export async function apiSend(
  base: string,
  accessToken: string,
  roomId: string,
  txnId: string,
  body: string,
  options: { onAttempt?: (attempt: SendAttempt) => void; honorRetryAfter?: boolean; attemptTimeoutMs?: number } = {},
): Promise<string> {
  const url = `${base}/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/${encodeURIComponent(txnId)}`
  const deadline = Date.now() + 30_000
  let last = 0
  while (Date.now() < deadline) {
    const startedAt = Date.now()
    let pauseMs = 50
    try {
      const res = await fetch(url, {
        method: 'PUT',
        headers: { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({ msgtype: 'm.text', body }),
        signal: AbortSignal.timeout(options.attemptTimeoutMs ?? 15_000),
      })
      last = res.status
      const answer = (await res.json().catch(() => undefined)) as { event_id?: string; retry_after_ms?: unknown } | undefined
      options.onAttempt?.({ txnId, startedAt, endedAt: Date.now(), status: res.status, body: answer })
      if (res.status === 200 && answer?.event_id !== undefined) return answer.event_id
      if (res.status >= 400 && res.status < 500) throw new Error(`send ${txnId} refused with ${res.status}: ${JSON.stringify(answer)}`)
      if (options.honorRetryAfter && typeof answer?.retry_after_ms === 'number') pauseMs = answer.retry_after_ms
    } catch (err) {
      if (err instanceof Error && err.message.startsWith(`send ${txnId} refused`)) throw err
      const cause = err instanceof Error && err.cause instanceof Error ? `: ${err.cause.message}` : ''
      options.onAttempt?.({ txnId, startedAt, endedAt: Date.now(), status: undefined, body: undefined, error: `${String(err)}${cause}` })
      last = 0
    }
    await sleep(pauseMs)
  }
  throw new Error(`send ${txnId}: no 200 within 30 s (last status ${last})`)
}

/**
 * Creates private rooms through `POST /_matrix/client/v3/createRoom` until each persister of
 * `cluster` owns `perWriter` of them (rooms beyond that are left alone), and returns those.
 *
 * @example
 * const rooms = await createRoomsOnEveryWriter(cluster, alice.access_token, 2)
 */
export async function createRoomsOnEveryWriter(cluster: TestCluster, accessToken: string, perWriter: number): Promise<string[]> {
  const owned = new Map<string, string[]>([...cluster.persisters.keys()].map((w) => [w, []]))
  for (let attempt = 0; attempt < perWriter * owned.size * 10; attempt++) {
    if ([...owned.values()].every((rooms) => rooms.length >= perWriter)) break
    const res = await fetch(`${cluster.run.ready.client_url}/_matrix/client/v3/createRoom`, {
      method: 'POST',
      headers: { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ preset: 'private_chat' }),
    })
    expect(res.status, 'createRoom').to.equal(200)
    const { room_id: roomId } = (await res.json()) as { room_id: string }
    const mine = owned.get(cluster.shardMap.ownerOf(roomId))!
    if (mine.length < perWriter) mine.push(roomId)
  }
  const rooms = [...owned.values()].flat()
  expect(rooms, 'rooms on every writer').to.have.length(perWriter * owned.size)
  return rooms
}
