import { randomUUID } from 'node:crypto'
import type { NewEvent, PersistedEvent } from '../../../persisters/new-event.js'
import { roomReadRoutes } from '../../../api/routes/room-reads.js'
import { syncRoutes } from '../../../api/routes/sync.js'
import { createRoomEvents, newRoomId } from '../persisters/harness.js'
import { startApi, v3, type ApiHarness, type Session } from './api-harness.js'

/** A monolith serving the room read routes and /sync (rooms are created through the sender, not createRoom). */
export function startReadApi(): Promise<ApiHarness> {
  return startApi({ roomRoutes: (services) => [roomReadRoutes(services), syncRoutes(services)] })
}

/** Persists `events` in `roomId` through the process's sender (read-your-writes included). */
export function sendEvents(h: ApiHarness, roomId: string, ...events: NewEvent[]): Promise<PersistedEvent[]> {
  return h.process!.services!.sender.send({ requestId: randomUUID(), roomId, events })
}

/** Creates a room of `creator` (createRoom's initial events); returns its ID. */
export async function createRoom(h: ApiHarness, creator: string, options: Parameters<typeof createRoomEvents>[1] = {}): Promise<string> {
  const roomId = newRoomId()
  await sendEvents(h, roomId, ...createRoomEvents(creator, options))
  return roomId
}

/** A public room `users[0]` created and the others joined; returns its ID. */
export async function createSharedRoom(h: ApiHarness, ...users: readonly Session[]): Promise<string> {
  const roomId = await createRoom(h, users[0]!.user_id, { joinRule: 'public' })
  for (const user of users.slice(1)) await sendEvents(h, roomId, membership(user.user_id, user.user_id, 'join'))
  return roomId
}

export function text(sender: string, body: string, txn?: { deviceId: string; txnId: string }): NewEvent {
  return { type: 'm.room.message', sender, content: { msgtype: 'm.text', body }, ...(txn && { txn }) }
}

export function membership(sender: string, target: string, value: string, extra: Record<string, unknown> = {}): NewEvent {
  return { type: 'm.room.member', state_key: target, sender, content: { membership: value, ...extra } }
}

export function visibility(sender: string, value: string): NewEvent {
  return { type: 'm.room.history_visibility', state_key: '', sender, content: { history_visibility: value } }
}

export const enc = encodeURIComponent

/** An event as the client-server API serves it (the fields the tests read). */
export interface ClientEvent {
  event_id: string
  type: string
  sender: string
  state_key?: string
  content: Record<string, unknown>
  unsigned: Record<string, unknown>
}


/**
 * `GET /sync` as `session` with `query` (since, timeout, filter…); throws unless 200.
 *
 * @example
 * const body = await syncAs<{ next_batch: string }>(h, alice, { since, timeout: '0' })
 */
export async function syncAs<T>(h: ApiHarness, session: Session, query: Record<string, string> = {}): Promise<T> {
  const qs = Object.entries(query)
    .map(([k, v]) => `${k}=${enc(v)}`)
    .join('&')
  const res = await h.call('GET', `${v3}/sync${qs ? `?${qs}` : ''}`, { token: session.access_token })
  if (res.statusCode !== 200) throw new Error(`sync: ${res.statusCode} ${res.body}`)
  return res.json<T>()
}

/** `POST /createRoom` as `session` with `body`; the room ID. */
export async function createRoomAs(h: ApiHarness, session: Session, body: Record<string, unknown> = {}): Promise<string> {
  const res = await h.call('POST', `${v3}/createRoom`, { token: session.access_token, body })
  if (res.statusCode !== 200) throw new Error(`createRoom: ${res.statusCode} ${res.body}`)
  return res.json<{ room_id: string }>().room_id
}

/** `POST /join/{roomId}` as `session`; throws unless 200. */
export async function joinAs(h: ApiHarness, session: Session, roomId: string): Promise<void> {
  const res = await h.call('POST', `${v3}/join/${enc(roomId)}`, { token: session.access_token, body: {} })
  if (res.statusCode !== 200) throw new Error(`join: ${res.statusCode} ${res.body}`)
}

let sentTexts = 0
/** A text message sent through the API as `session` (a fresh transaction ID each); the event ID. */
export async function sendTextAs(h: ApiHarness, session: Session, roomId: string, body: string): Promise<string> {
  const res = await h.call('PUT', `${v3}/rooms/${enc(roomId)}/send/m.room.message/text${++sentTexts}`, { token: session.access_token, body: { msgtype: 'm.text', body } })
  if (res.statusCode !== 200) throw new Error(`send: ${res.statusCode} ${res.body}`)
  return res.json<{ event_id: string }>().event_id
}
