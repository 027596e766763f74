import { randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { stringify as toYaml } from 'yaml'
import type { NewEvent } from '../../../persisters/new-event.js'
import type { PersistedEventWire } from '../../../persisters/replication-routes.js'

/** The test side of a persister's replication endpoint, as an api worker uses it. */

/** One persister's replication endpoint. */
export interface ReplicationTarget {
  readonly base: string
  readonly secret: string
}

/** The answer to one persist attempt; status 0 means no HTTP answer (connection refused or cut). */
export interface PersistAnswer {
  readonly status: number
  readonly events?: readonly PersistedEventWire[]
  readonly owner?: string
}

/**
 * One `POST /_myelin/replication/persist/<requestId>` attempt; never throws for transport errors.
 *
 * @example
 * const answer = await persistOnce(target, 'req-1', roomId, [message])
 * if (answer.status === 200) console.log(answer.events?.[0]?.event_id)
 */
export async function persistOnce(target: ReplicationTarget, requestId: string, roomId: string, events: readonly NewEvent[]): Promise<PersistAnswer> {
  try {
    const res = await fetch(`${target.base}/_myelin/replication/persist/${encodeURIComponent(requestId)}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${target.secret}`, 'content-type': 'application/json' },
      body: JSON.stringify({ room_id: roomId, events }),
      signal: AbortSignal.timeout(15_000),
    })
    const body = (await res.json().catch(() => ({}))) as { events?: PersistedEventWire[]; owner?: string }
    return { status: res.status, ...(body.events !== undefined && { events: body.events }), ...(body.owner !== undefined && { owner: body.owner }) }
  } catch {
    return { status: 0 }
  }
}

/**
 * Repeats `attempt` until it answers 200 (what a client does with a send whose outcome it does
 * not know); any other 4xx is a test failure. Gives up after `deadlineMs`.
 *
 * @example
 * const events = await untilOk(() => persistOnce(target, requestId, roomId, [message]))
 */
export async function untilOk(attempt: () => Promise<PersistAnswer>, deadlineMs = 30_000): Promise<readonly PersistedEventWire[]> {
  const deadline = Date.now() + deadlineMs
  let last: PersistAnswer = { status: 0 }
  while (Date.now() < deadline) {
    last = await attempt()
    if (last.status === 200 && last.events !== undefined) return last.events
    if (last.status >= 400 && last.status < 500) throw new Error(`persist refused with ${last.status}`)
    await sleep(50)
  }
  throw new Error(`no 200 within ${deadlineMs} ms (last status ${last.status})`)
}

/** A fresh room ID on `serverName`. */
export function newRoomId(serverName: string): string {
  return `!${randomBytes(9).toString('base64url')}:${serverName}`
}

/** createRoom's initial events for a private room of `creator` (create, join, power levels, join rules, history visibility). */
export function createRoomEvents(creator: string): NewEvent[] {
  return [
    { type: 'm.room.create', state_key: '', sender: creator, content: { room_version: '11' } },
    { type: 'm.room.member', state_key: creator, sender: creator, content: { membership: 'join' } },
    {
      type: 'm.room.power_levels',
      state_key: '',
      sender: creator,
      content: { users: { [creator]: 100 }, users_default: 0, events_default: 0, state_default: 50, ban: 50, kick: 50, redact: 50, invite: 0 },
    },
    { type: 'm.room.join_rules', state_key: '', sender: creator, content: { join_rule: 'invite' } },
    { type: 'm.room.history_visibility', state_key: '', sender: creator, content: { history_visibility: 'shared' } },
  ]
}

/** A text message carrying a client transaction; `body` is unique per send in these tests. */
export function textMessage(sender: string, body: string, txn: { deviceId: string; txnId: string }): NewEvent {
  return { type: 'm.room.message', sender, content: { msgtype: 'm.text', body }, txn }
}

/**
 * Writes the two config files of a single persister (`persister1`, the deployment's only
 * event writer) listening on `port` with replication and health, and returns their paths.
 *
 * @example
 * const files = await writePersisterConfig(dir, { databaseUrl, redisUrl, port: 9101, secret: 'x'.repeat(24) })
 * await startMyelin(['run', '--config', files[0], '--config', files[1]], parseListeningLine)
 */
export async function writePersisterConfig(
  dir: string,
  options: { databaseUrl: string; redisUrl: string; port: number; secret: string; serverName: string; signingKey: string },
): Promise<[shared: string, worker: string]> {
  const shared = join(dir, 'shared.yaml')
  const worker = join(dir, 'persister1.yaml')
  await writeFile(
    shared,
    toYaml({
      server_name: options.serverName,
      database: { url: options.databaseUrl, pool_size: 10 },
      redis: { url: options.redisUrl },
      replication_secret: options.secret,
      signing_key: options.signingKey.trim(),
      instance_map: { persister1: { host: '127.0.0.1', port: options.port } },
      stream_writers: { events: ['persister1'] },
      run_background_tasks_on: 'persister1',
    }),
  )
  await writeFile(
    worker,
    toYaml({ worker_name: 'persister1', worker_app: 'persister', listeners: [{ port: options.port, bind_address: '127.0.0.1', resources: ['replication', 'health'] }] }),
  )
  return [shared, worker]
}
