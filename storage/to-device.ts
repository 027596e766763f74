import { sql, type Kysely } from 'kysely'
import { lockOrderedStream } from './ordered-streams.js'
import type { Database } from './schema.js'

/**
 * To-device messages (client-server API "Send-to-Device messaging"): a message waits in
 * `device_inbox` for its device, which receives it in /sync (`to_device`) and acknowledges it
 * by syncing from a later token; acknowledged messages are deleted (`toDeviceForSync`).
 * Delivery is at least once: a client that syncs again from the same token gets them again.
 *
 * Ordering guarantee (storage/ordered-streams.ts): a sender allocates stream IDs from
 * `to_device_stream_seq` under the stream's lock and records the highest in
 * `to_device_position` in the same transaction. So the recorded position (never the table's
 * max, which falls as messages are deleted) is one below which nothing can still appear.
 */

/** Most messages one sync delivers to a device; the rest come with the next syncs. */
export const toDeviceSyncLimit = 100

/** A message as the recipient's sync shows it. */
export interface ToDeviceEvent {
  readonly sender: string
  readonly type: string
  readonly content: Record<string, unknown>
}

/** What one /sendToDevice request sends: user ID → device ID (or `*`: all of them) → content. */
export type ToDeviceMessages = Readonly<Record<string, Readonly<Record<string, Record<string, unknown>>>>>

/**
 * Queues `messages` for their devices, once per transaction ID of the sending device: a repeat
 * of `(sender, senderDevice, txnId)` queues nothing. Devices that do not exist are skipped;
 * `*` means every device the user has now.
 *
 * @returns how many messages were queued (0 for a repeat).
 * @example
 * await sendToDevice(db, { sender: '@a:hs', senderDevice: 'DEV', txnId: 't1', type: 'm.custom', messages: { '@b:hs': { '*': { hi: 1 } } }, now: Date.now() })
 */
export async function sendToDevice(
  db: Kysely<Database>,
  request: { sender: string; senderDevice: string; txnId: string; type: string; messages: ToDeviceMessages; now: number },
): Promise<number> {
  const recipients = Object.keys(request.messages)
  return db.transaction().execute(async (trx) => {
    await lockOrderedStream(trx, 'to_device')
    const fresh = await trx
      .insertInto('to_device_txns')
      .values({ user_id: request.sender, device_id: request.senderDevice, txn_id: request.txnId, inserted_ts: request.now })
      .onConflict((oc) => oc.doNothing())
      .returning('txn_id')
      .executeTakeFirst()
    if (fresh === undefined || recipients.length === 0) return 0
    const devices = await trx.selectFrom('devices').select(['user_id', 'device_id']).where('user_id', 'in', recipients).execute()
    const targets: { user_id: string; device_id: string; message_json: string }[] = []
    for (const { user_id: userId, device_id: deviceId } of devices) {
      const byDevice = request.messages[userId] ?? {}
      const content = byDevice[deviceId] ?? byDevice['*']
      if (content !== undefined) targets.push({ user_id: userId, device_id: deviceId, message_json: JSON.stringify({ sender: request.sender, type: request.type, content }) })
    }
    if (targets.length === 0) return 0
    await sql`
      WITH queued AS (
        INSERT INTO device_inbox (user_id, device_id, message_json, stream_id)
        SELECT u, d, m, nextval('to_device_stream_seq')
        FROM unnest(${targets.map((t) => t.user_id)}::text[], ${targets.map((t) => t.device_id)}::text[], ${targets.map((t) => t.message_json)}::text[]) AS x(u, d, m)
        RETURNING stream_id
      )
      UPDATE to_device_position SET position = (SELECT max(stream_id) FROM queued)`.execute(trx)
    return targets.length
  })
}

/** The stream's position, the highest committed stream ID (1 when nothing was ever sent), as an SQL expression to read with others. */
export const toDevicePositionSql = sql<bigint>`(SELECT position FROM to_device_position)`

/**
 * Devices with messages queued in `(after, upTo]`, keyed `<user ID> <device ID>`, each with
 * the newest stream ID there.
 *
 * @example
 * await devicesWithToDeviceChanges(db, 4n, 9n) // Map { '@b:hs DEV' => 9n }
 */
export async function devicesWithToDeviceChanges(db: Kysely<Database>, after: bigint, upTo: bigint): Promise<Map<string, bigint>> {
  const { rows } = await sql<{ user_id: string; device_id: string; newest: string }>`
    SELECT user_id, device_id, max(stream_id) AS newest FROM device_inbox
    WHERE stream_id > ${after} AND stream_id <= ${upTo} GROUP BY user_id, device_id`.execute(db)
  return new Map(rows.map((row) => [toDeviceKey(row.user_id, row.device_id), BigInt(row.newest)]))
}

/** The key of a device in `devicesWithToDeviceChanges`. */
export function toDeviceKey(userId: string, deviceId: string): string {
  return `${userId} ${deviceId}`
}

/**
 * One sync's to-device messages for a device: reads those in `(after, upTo]`, at most `limit`,
 * oldest first, and deletes those up to `after` (the device has seen them: it syncs from a
 * token past them). When the stream did not move past `after` there is nothing to read, and no
 * statement runs: seen messages then wait for the device's next sync after it moves (never
 * delivered again meanwhile, unless the client goes back to an older token).
 *
 * @returns the messages, and the position they go up to: `upTo`, or the last message's
 *   stream ID when more are waiting (they come with the next sync).
 * @example
 * const { events, upTo } = await toDeviceForSync(db, { userId, deviceId, after: 3n, upTo: 9n })
 */
export async function toDeviceForSync(
  db: Kysely<Database>,
  q: { userId: string; deviceId: string; after: bigint; upTo: bigint; limit?: number },
): Promise<{ events: ToDeviceEvent[]; upTo: bigint }> {
  const limit = q.limit ?? toDeviceSyncLimit
  if (q.after >= q.upTo) return { events: [], upTo: q.upTo }
  const { rows } = await sql<{ stream_id: string; message_json: string }>`
    WITH seen AS (
      DELETE FROM device_inbox WHERE user_id = ${q.userId} AND device_id = ${q.deviceId} AND stream_id <= ${q.after}
    )
    SELECT stream_id, message_json FROM device_inbox
    WHERE user_id = ${q.userId} AND device_id = ${q.deviceId} AND stream_id > ${q.after} AND stream_id <= ${q.upTo}
    ORDER BY stream_id LIMIT ${limit + 1}`.execute(db)
  const delivered = rows.slice(0, limit)
  const more = rows.length > limit
  return {
    events: delivered.map((row) => JSON.parse(row.message_json) as ToDeviceEvent),
    upTo: more ? BigInt(delivered.at(-1)?.stream_id ?? q.after) : q.upTo,
  }
}
