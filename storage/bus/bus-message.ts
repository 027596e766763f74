import { StorageError } from '../errors.js'

/**
 * What travels on the bus: positions and hints, never the only copy of data (ARCHITECTURE §5).
 *
 * - `POSITION`: `writer` guarantees it wrote nothing on `stream` in (`prev`, `next`]
 *   (`prev ≤ next`; `prev = next` is a bare announcement). `rooms` is an optional hint of the
 *   rooms touched: absent means "any room", `[]` means "no room". After the entry `@` it also
 *   lists the users whose membership changed (`streamHint` in `streams/writer-position.ts`).
 * - `REPLICATE`: `from` asks every writer to announce its positions.
 *
 * @example
 * const message: BusMessage = { type: 'POSITION', stream: 'events', writer: 'persister1', prev: 100n, next: 105n, rooms: ['!a:hs'] }
 */
export type BusMessage =
  | {
      type: 'POSITION'
      stream: string
      writer: string
      prev: bigint
      next: bigint
      rooms?: readonly string[]
    }
  | { type: 'REPLICATE'; from: string }

/**
 * Largest encoded message in bytes. Postgres NOTIFY payloads must stay below 8,000 bytes; a
 * room hint that would push a message beyond this is dropped (receivers then assume any room).
 */
export const maxBusMessageBytes = 7000

/** Longest stream or writer name, in characters. */
export const maxBusNameLength = 200

/** Wire token of an empty room hint (`rooms: []`), distinct from an absent hint. */
const emptyHint = '-'

const namePattern = /^[\x21-\x7e]+$/
const positionPattern = /^-?(0|[1-9][0-9]{0,18})$/
const roomPattern = /^[^\s,\p{Cc}]+$/u
const minPosition = -(2n ** 63n)
const maxPosition = 2n ** 63n - 1n

/** Why a room hint was left out of an encoded message. */
export type DroppedHint = 'invalid-room' | 'too-large'

/**
 * An encoded message: the wire line, and why the room hint was dropped if it was. Dropping
 * a hint is always safe (receivers treat a missing hint as "any room").
 */
export interface EncodedBusMessage {
  line: string
  droppedHint?: DroppedHint
}

/**
 * Encodes a message as one UTF-8 line: `POSITION <stream> <writer> <prev> <next> [<rooms>]`
 * with rooms comma-separated (`-` for none), or `REPLICATE <from>`.
 *
 * Stream and writer names are 1–200 printable ASCII characters without spaces. Room IDs must
 * be non-empty, well-formed Unicode without whitespace, commas or control characters, and not
 * `-`; a hint with an invalid room ID, or one that would make the line longer than
 * `maxBusMessageBytes`, is dropped and `droppedHint` says why.
 *
 * @throws StorageError `ES_INVALID_PARAM` for an invalid name, a position outside the signed
 *   64-bit range, or `prev > next`.
 * @example
 * encodeBusMessage({ type: 'POSITION', stream: 'events', writer: 'persister1', prev: 100n, next: 105n, rooms: ['!a:hs', '!b:hs'] }).line
 * // 'POSITION events persister1 100 105 !a:hs,!b:hs'
 * encodeBusMessage({ type: 'REPLICATE', from: 'api1' }).line // 'REPLICATE api1'
 */
export function encodeBusMessage(message: BusMessage): EncodedBusMessage {
  if (message.type === 'REPLICATE') {
    checkName(message.from, 'REPLICATE sender')
    return { line: `REPLICATE ${message.from}` }
  }
  if (message.type !== 'POSITION') {
    throw new StorageError('ES_INVALID_PARAM', `unknown bus message type ${JSON.stringify((message as { type: unknown }).type)}`)
  }
  checkName(message.stream, 'stream name')
  checkName(message.writer, 'writer name')
  checkPosition(message.prev, 'prev')
  checkPosition(message.next, 'next')
  if (message.prev > message.next) {
    throw new StorageError('ES_INVALID_PARAM', `POSITION prev ${message.prev} is after next ${message.next}`)
  }
  const base = `POSITION ${message.stream} ${message.writer} ${message.prev} ${message.next}`
  if (message.rooms === undefined) return { line: base }
  if (!message.rooms.every(isValidRoomId)) return { line: base, droppedHint: 'invalid-room' }
  const line = `${base} ${message.rooms.length === 0 ? emptyHint : message.rooms.join(',')}`
  if (Buffer.byteLength(line, 'utf8') > maxBusMessageBytes) return { line: base, droppedHint: 'too-large' }
  return { line }
}

/** Result of decoding a line received from the wire. */
export type DecodedBusMessage = { ok: true; message: BusMessage } | { ok: false; reason: string }

/**
 * Decodes one line received from the wire. Never throws: anything that `encodeBusMessage`
 * could not have produced is `{ ok: false, reason }` for the caller to log and drop.
 *
 * @example
 * decodeBusMessage('POSITION events persister1 100 105 -')
 * // { ok: true, message: { type: 'POSITION', stream: 'events', writer: 'persister1', prev: 100n, next: 105n, rooms: [] } }
 * decodeBusMessage('HELLO') // { ok: false, reason: 'unknown command "HELLO"' }
 */
export function decodeBusMessage(line: unknown): DecodedBusMessage {
  if (typeof line !== 'string') return { ok: false, reason: 'not a string' }
  if (line.length > 8000) return { ok: false, reason: `line of ${line.length} characters is too long` }
  const parts = line.split(' ')
  const command = parts[0]
  if (command === 'REPLICATE') {
    if (parts.length !== 2) return { ok: false, reason: `REPLICATE needs 1 argument, got ${parts.length - 1}` }
    const from = parts[1] ?? ''
    if (!isValidName(from)) return { ok: false, reason: 'invalid REPLICATE sender' }
    return { ok: true, message: { type: 'REPLICATE', from } }
  }
  if (command === 'POSITION') {
    if (parts.length !== 5 && parts.length !== 6) {
      return { ok: false, reason: `POSITION needs 4 or 5 arguments, got ${parts.length - 1}` }
    }
    const [, stream = '', writer = '', prevText = '', nextText = '', hint] = parts
    if (!isValidName(stream)) return { ok: false, reason: 'invalid stream name' }
    if (!isValidName(writer)) return { ok: false, reason: 'invalid writer name' }
    const prev = parsePosition(prevText)
    const next = parsePosition(nextText)
    if (prev === undefined || next === undefined) return { ok: false, reason: 'invalid position' }
    if (prev > next) return { ok: false, reason: `prev ${prev} is after next ${next}` }
    if (hint === undefined) return { ok: true, message: { type: 'POSITION', stream, writer, prev, next } }
    const rooms = hint === emptyHint ? [] : hint.split(',')
    if (!rooms.every(isValidRoomId)) return { ok: false, reason: 'invalid room hint' }
    return { ok: true, message: { type: 'POSITION', stream, writer, prev, next, rooms } }
  }
  return { ok: false, reason: `unknown command ${JSON.stringify((command ?? '').slice(0, 40))}` }
}

/**
 * True when `roomId` can travel in a room hint (see `encodeBusMessage`).
 *
 * @example
 * isValidRoomId('!abc:example.org') // true
 * isValidRoomId('!a,b:hs') // false
 */
export function isValidRoomId(roomId: string): boolean {
  return (
    typeof roomId === 'string' && roomId !== emptyHint && roomPattern.test(roomId) && roomId.isWellFormed()
  )
}

function isValidName(name: string): boolean {
  return typeof name === 'string' && name.length <= maxBusNameLength && namePattern.test(name)
}

function checkName(name: string, what: string): void {
  if (!isValidName(name)) {
    throw new StorageError(
      'ES_INVALID_PARAM',
      `${what} ${JSON.stringify(String(name).slice(0, 80))} must be 1-${maxBusNameLength} printable ASCII characters without spaces`,
    )
  }
}

function checkPosition(position: bigint, what: string): void {
  if (typeof position !== 'bigint' || position < minPosition || position > maxPosition) {
    throw new StorageError('ES_INVALID_PARAM', `POSITION ${what} ${String(position)} is not a signed 64-bit integer`)
  }
}

function parsePosition(text: string): bigint | undefined {
  if (!positionPattern.test(text) || text === '-0') return undefined
  const value = BigInt(text)
  return value < minPosition || value > maxPosition ? undefined : value
}
