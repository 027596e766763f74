import { randomBytes } from 'node:crypto'
import type { Kysely } from 'kysely'
import type { Registry } from 'prom-client'
import type { NewEvent, PersistedEvent } from '../../../persisters/new-event.js'
import { createPersister } from '../../../persisters/persister.js'
import type { Persister } from '../../../persisters/persister.js'
import { createShardMap } from '../../../persisters/shard-map.js'
import { buildPdu } from '../../../persisters/build-pdu.js'
import type { JsonObject } from '../../../storage/events/redaction.js'
import { generateSigningKey, parseSigningKey } from '../../../storage/events/signing.js'
import { silentLogger } from '../../../storage/logger.js'
import type { Database } from '../../../storage/schema.js'
import { createIdGenerator } from '../../../storage/streams/id-generator.js'
import type { Bus } from '../../../storage/bus/bus.js'

export const serverName = 'hs.test'
export const signingKey = generateSigningKey('test')

/** A fresh room ID on the test server. */
export function newRoomId(): string {
  return `!${randomBytes(9).toString('base64url')}:${serverName}`
}

export function user(name: string): string {
  return `@${name}:${serverName}`
}

/**
 * A persister for tests. `writers` is the deployment's writer list; `pins` decide ownership
 * where the test needs it (a pin to `writer` makes the persister believe it owns the room).
 */
export async function startPersister(
  db: Kysely<Database>,
  options: {
    writer: string
    writers?: readonly string[]
    pins?: Record<string, string>
    maxBatch?: number
    transactionConcurrency?: number
    registry?: Registry
    clock?: () => number
    /** Announces positions (with their hints) on this bus. */
    bus?: Bus
  },
): Promise<Persister> {
  const writers = options.writers ?? [options.writer]
  const log = silentLogger()
  const generator = (stream: 'events' | 'backfill') => createIdGenerator({ db, stream, writer: options.writer, writers, log, ...(options.bus === undefined ? {} : { bus: options.bus }) })
  const [events, backfill] = await Promise.all([generator('events'), generator('backfill')])
  const persister = createPersister({
    db,
    events,
    backfill,
    shardMap: createShardMap({ writers, pins: options.pins ?? {} }),
    writer: options.writer,
    serverName,
    signingKey,
    log,
    ...(options.maxBatch === undefined ? {} : { maxBatch: options.maxBatch }),
    ...(options.transactionConcurrency === undefined ? {} : { transactionConcurrency: options.transactionConcurrency }),
    ...(options.registry === undefined ? {} : { registry: options.registry }),
    ...(options.clock === undefined ? {} : { clock: options.clock }),
  })
  return {
    ...persister,
    writer: persister.writer,
    async close() {
      await persister.close()
      await Promise.all([events.close(), backfill.close()])
    },
  }
}

/** createRoom's initial events: create, creator join, power levels, join rules, history visibility, name, invites. */
export function createRoomEvents(
  creator: string,
  options: { joinRule?: 'public' | 'invite'; invite?: readonly string[]; users?: Record<string, number>; name?: string } = {},
): NewEvent[] {
  const events: NewEvent[] = [
    { type: 'm.room.create', state_key: '', sender: creator, content: { room_version: '11' } },
    { type: 'm.room.member', state_key: creator, sender: creator, content: { membership: 'join' } },
    {
      type: 'm.room.power_levels',
      state_key: '',
      sender: creator,
      content: { users: { [creator]: 100, ...options.users }, users_default: 0, events_default: 0, state_default: 50, ban: 50, kick: 50, redact: 50, invite: 0 },
    },
    { type: 'm.room.join_rules', state_key: '', sender: creator, content: { join_rule: options.joinRule ?? 'invite' } },
    { type: 'm.room.history_visibility', state_key: '', sender: creator, content: { history_visibility: 'shared' } },
  ]
  if (options.name !== undefined) events.push({ type: 'm.room.name', state_key: '', sender: creator, content: { name: options.name } })
  for (const invitee of options.invite ?? []) {
    events.push({ type: 'm.room.member', state_key: invitee, sender: creator, content: { membership: 'invite' } })
  }
  return events
}

export function message(sender: string, body: string, txn?: { deviceId: string; txnId: string }): NewEvent {
  return { type: 'm.room.message', sender, content: { msgtype: 'm.text', body }, ...(txn === undefined ? {} : { txn }) }
}

export function member(sender: string, target: string, membership: string): NewEvent {
  return { type: 'm.room.member', state_key: target, sender, content: { membership } }
}

let requestCounter = 0

/** Persists `events` under a fresh request ID. */
export function send(persister: Persister, roomId: string, ...events: NewEvent[]): Promise<PersistedEvent[]> {
  return persister.persist({ requestId: `req-${process.pid}-${++requestCounter}-${randomBytes(4).toString('hex')}`, roomId, events })
}

/** Stored rows of a room's DAG: events (by stream order) and edges. */
export async function roomDag(db: Kysely<Database>, roomId: string) {
  const events = await db
    .selectFrom('events')
    .select(['event_id', 'stream_ordering', 'depth', 'type', 'state_key', 'sender', 'instance_name'])
    .where('room_id', '=', roomId)
    .orderBy('stream_ordering')
    .execute()
  const edges = await db.selectFrom('event_edges').select(['event_id', 'prev_event_id']).where('room_id', '=', roomId).execute()
  const forward = await db.selectFrom('event_forward_extremities').select('event_id').where('room_id', '=', roomId).execute()
  return { events, edges, forward: forward.map((row) => row.event_id).sort() }
}

/** Number of events stored in a room. */
export async function eventCount(db: Kysely<Database>, roomId: string): Promise<number> {
  const row = await db
    .selectFrom('events')
    .select((eb) => eb.fn.countAll<string>().as('n'))
    .where('room_id', '=', roomId)
    .executeTakeFirstOrThrow()
  return Number(row.n)
}

/** Awaits `promise`, expecting it to reject; returns the rejection. */
export async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise
  } catch (err) {
    return err
  }
  throw new Error('expected a rejection')
}

/** A user of another server, the sender of `remotePdu`s. */
export const remote = '@remote:other.test'
const remoteKey = parseSigningKey(generateSigningKey('r1'))

/** A PDU built and signed by another server (with event_id, as it would arrive over federation). */
export function remotePdu(
  roomId: string,
  fields: { type?: string; stateKey?: string; content?: JsonObject; prevEvents: string[]; depth: number },
): JsonObject {
  const built = buildPdu(
    {
      roomId,
      type: fields.type ?? 'm.room.message',
      ...(fields.stateKey === undefined ? {} : { stateKey: fields.stateKey }),
      sender: remote,
      content: fields.content ?? { msgtype: 'm.text', body: `at ${fields.depth}` },
      originServerTs: 1_000 + fields.depth,
      prevEvents: fields.prevEvents,
      authEvents: [],
      depth: fields.depth,
    },
    'other.test',
    remoteKey,
  )
  return { ...built.pdu, event_id: built.eventId }
}
