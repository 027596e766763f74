import { randomBytes } from 'node:crypto'
import type { Kysely } from 'kysely'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import type { Database } from '../../../../storage/schema.js'
import type { Logger } from '../../../../storage/logger.js'

/** Inserts a room row so event rows can reference it; returns its ID. */
export async function createRoom(db: Kysely<Database>, roomId = `!${randomBytes(6).toString('hex')}:test`): Promise<string> {
  await db
    .insertInto('rooms')
    .values({ room_id: roomId, room_version: '10', creator: '@t:test', created_ts: Date.now() })
    .execute()
  return roomId
}

/** Inserts one minimal `events` row at `streamOrdering`, written by `writer`. */
export async function insertEventRow(db: Kysely<Database>, roomId: string, streamOrdering: bigint, writer: string): Promise<void> {
  await db
    .insertInto('events')
    .values({
      stream_ordering: streamOrdering,
      event_id: `$${streamOrdering}-${randomBytes(4).toString('hex')}`,
      room_id: roomId,
      type: 'm.room.message',
      state_key: null,
      sender: '@t:test',
      origin_server_ts: Date.now(),
      received_ts: Date.now(),
      depth: 1,
      instance_name: writer,
      redacts: null,
      membership: null,
    })
    .execute()
}

/** A logger that keeps every line (parsed) for assertions. */
export function capturingLogger(): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = []
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const text of chunk.toString('utf8').split('\n')) if (text) lines.push(JSON.parse(text) as Record<string, unknown>)
      callback()
    },
  })
  return { log: pino({ level: 'debug' }, sink), lines }
}

/** Polls `condition` every 10 ms until true; throws after `timeoutMs` with `what`. */
export async function eventually(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

/** A promise and its resolve/reject, for holding transactions open. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void; reject: (err: unknown) => void } {
  let resolve!: (value: T) => void
  let reject!: (err: unknown) => void
  const promise = new Promise<T>((res, rej) => {
    resolve = res
    reject = rej
  })
  return { promise, resolve, reject }
}
