import { StorageError } from '../errors.js'

/** Longest token text `parseRoomStreamToken` accepts; anything longer is rejected unread. */
export const maxRoomStreamTokenLength = 2000

/** Largest writer ID a token may carry (`instances.instance_id` is a Postgres `integer`). */
export const maxWriterId = 2_147_483_647

/** Largest position a token may carry (Postgres `bigint`). */
export const maxStreamPosition = 9_223_372_036_854_775_807n

const minStreamPosition = -maxStreamPosition - 1n

/**
 * A position in a room's event streams, as handed to clients (Synapse `RoomStreamToken`,
 * reference section 2). Immutable. Three shapes:
 *
 * - live `s<stream>`: every writer is at `stream`;
 * - vector clock `m<stream>~<writerId>.<pos>~…`: writers listed are at `pos`, all others at
 *   `stream`. Writer IDs are the small integers of the `instances` table;
 * - historic `t<depth>-<stream>`: a point in topological order (`/messages`), compared by the
 *   pair `(depth, stream)`; it carries no writer positions.
 *
 * Invariants (enforced by every constructor): every writer entry is strictly greater than
 * `stream`, so a token has exactly one normalized form and one text form (Synapse PR #17438:
 * emitting entries ≤ min broke clients); a historic token has no entries; live and vector
 * positions are ≥ 0 and ≤ 2^63−1; writer IDs are integers in [0, 2^31−1].
 *
 * "Writer `w` is at `p`" means: every event `w` wrote at a position ≤ `p` is covered by the
 * token. A row `(w, p)` is in the range (low, high] iff `low.isRowAfter(w, p) && high.covers(w, p)`.
 *
 * @example
 * const token = parseRoomStreamToken('m100~1.105~3.103')
 * token.positionOf(1) // 105n
 * token.positionOf(2) // 100n (unlisted writers are at the minimum)
 * token.isRowAfter(3, 104n) // true: a client holding this token has not seen it yet
 * token.copyAndAdvance(parseRoomStreamToken('s104')).toString() // 'm104~1.105'
 */
export class RoomStreamToken {
  /**
   * Positions strictly above `stream`, sorted by writer ID ascending. Empty for live and
   * historic tokens.
   */
  readonly #entries: readonly (readonly [writerId: number, position: bigint])[]

  private constructor(
    /** The minimum: every writer not listed is at this position. For a historic token, its stream part. */
    readonly stream: bigint,
    /** Depth of a historic (`t`) token; `undefined` for live and vector tokens. */
    readonly topological: bigint | undefined,
    entries: readonly (readonly [number, bigint])[],
  ) {
    this.#entries = entries
    Object.freeze(this)
  }

  /**
   * A live token: every writer at `stream`.
   *
   * @example
   * RoomStreamToken.live(48211n).toString() // 's48211'
   */
  static live(stream: bigint): RoomStreamToken {
    checkPosition(stream, 'stream position')
    return new RoomStreamToken(stream, undefined, [])
  }

  /**
   * A historic token at `(depth, stream)`. `stream` may be negative (backfilled events).
   *
   * @example
   * RoomStreamToken.historic(97n, 48211n).toString() // 't97-48211'
   * RoomStreamToken.historic(5n, -3n).toString() // 't5--3'
   */
  static historic(depth: bigint, stream: bigint): RoomStreamToken {
    checkPosition(depth, 'depth')
    if (stream < minStreamPosition || stream > maxStreamPosition) {
      throw invalid(`stream position ${stream} of historic token is outside the 64-bit range`)
    }
    return new RoomStreamToken(stream, depth, [])
  }

  /**
   * A vector token from a minimum and per-writer positions (e.g. a stream tracker's state).
   * Entries ≤ `min` are dropped; with none left the token is live.
   *
   * @throws StorageError `ES_INVALID_TOKEN` on a negative or out-of-range position or writer ID.
   * @example
   * RoomStreamToken.fromPositions(100n, new Map([[1, 105n], [2, 90n]])).toString() // 'm100~1.105'
   */
  static fromPositions(min: bigint, positions: ReadonlyMap<number, bigint>): RoomStreamToken {
    checkPosition(min, 'minimum position')
    const entries: [number, bigint][] = []
    for (const [writerId, position] of positions) {
      checkWriterId(writerId)
      checkPosition(position, `position of writer ${writerId}`)
      if (position > min) entries.push([writerId, position])
    }
    entries.sort((a, b) => a[0] - b[0])
    return new RoomStreamToken(min, undefined, entries)
  }

  /** True for `t` tokens. */
  get isHistoric(): boolean {
    return this.topological !== undefined
  }

  /**
   * Writer positions strictly above `stream` (a copy; empty for live and historic tokens).
   *
   * @example
   * parseRoomStreamToken('m7~2.9').positions() // Map { 2 => 9n }
   */
  positions(): Map<number, bigint> {
    return new Map(this.#entries)
  }

  /**
   * Position of `writerId` in this token: its entry, or `stream` when it has none.
   *
   * @example
   * parseRoomStreamToken('m7~2.9').positionOf(2) // 9n
   * parseRoomStreamToken('m7~2.9').positionOf(5) // 7n
   */
  positionOf(writerId: number): bigint {
    for (const [id, position] of this.#entries) if (id === writerId) return position
    return this.stream
  }

  /**
   * Highest position of any writer: the upper bound a reader's SQL range uses before filtering
   * rows per writer.
   *
   * @example
   * parseRoomStreamToken('m7~2.9~4.8').maxPosition() // 9n
   */
  maxPosition(): bigint {
    let max = this.stream
    for (const [, position] of this.#entries) if (position > max) max = position
    return max
  }

  /**
   * True when the row written by `writerId` at `position` is not covered by this token
   * (`position > positionOf(writerId)`): a client holding the token has not seen it yet.
   *
   * @example
   * parseRoomStreamToken('m7~2.9').isRowAfter(2, 9n) // false
   * parseRoomStreamToken('m7~2.9').isRowAfter(1, 8n) // true
   */
  isRowAfter(writerId: number, position: bigint): boolean {
    return position > this.positionOf(writerId)
  }

  /**
   * True when the row written by `writerId` at `position` is covered by this token
   * (`position ≤ positionOf(writerId)`); the negation of `isRowAfter`.
   *
   * @example
   * parseRoomStreamToken('s10').covers(3, 10n) // true
   */
  covers(writerId: number, position: bigint): boolean {
    return !this.isRowAfter(writerId, position)
  }

  /**
   * Partial order of Synapse's `is_before_or_eq`: `this.stream ≤ other.stream` and every
   * writer's position in this token is ≤ its position in `other`. Two tokens may be
   * incomparable (each ahead for some writer). The depth of historic tokens is ignored; use
   * `compareTopological` for the `/messages` order.
   *
   * @example
   * parseRoomStreamToken('m5~1.8').isBeforeOrEqual(parseRoomStreamToken('s8')) // true
   * parseRoomStreamToken('m5~1.8').isBeforeOrEqual(parseRoomStreamToken('m6~2.9')) // false
   */
  isBeforeOrEqual(other: RoomStreamToken): boolean {
    if (this.stream > other.stream) return false
    for (const [writerId, position] of this.#entries) {
      if (position > other.positionOf(writerId)) return false
    }
    // Writers listed only in `other` are at `this.stream` here, which is ≤ other.stream ≤ theirs.
    return true
  }

  /**
   * Least upper bound of two tokens (Synapse `copy_and_advance`): per-writer maximum, minimum
   * = maximum of minimums, entries that became redundant dropped.
   *
   * @throws StorageError `ES_INVALID_TOKEN` when either token is historic (depth has no maximum
   *   that stays meaningful).
   * @example
   * parseRoomStreamToken('m5~1.8').copyAndAdvance(parseRoomStreamToken('m6~2.9')).toString()
   * // 'm6~1.8~2.9'
   */
  copyAndAdvance(other: RoomStreamToken): RoomStreamToken {
    if (this.isHistoric || other.isHistoric) {
      throw invalid('a historic (t) token cannot be advanced')
    }
    const min = this.stream > other.stream ? this.stream : other.stream
    const merged = new Map<number, bigint>()
    for (const [writerId, position] of [...this.#entries, ...other.#entries]) {
      const known = merged.get(writerId)
      if (known === undefined || position > known) merged.set(writerId, position)
    }
    return RoomStreamToken.fromPositions(min, merged)
  }

  /**
   * Copy with every component clamped to `maxAllocated`, for tokens from the future (forged,
   * or issued before a restore): the result is never waited on forever. Clamping a historic
   * token clamps its stream part only.
   *
   * @example
   * parseRoomStreamToken('m90~1.120~2.95').clampTo(100n).toString() // 'm90~1.100~2.95'
   * parseRoomStreamToken('m150~1.160').clampTo(100n).toString() // 's100'
   */
  clampTo(maxAllocated: bigint): RoomStreamToken {
    if (this.topological !== undefined) {
      return this.stream <= maxAllocated ? this : RoomStreamToken.historic(this.topological, maxAllocated)
    }
    if (maxAllocated < 0n) throw invalid(`cannot clamp a token to negative position ${maxAllocated}`)
    const min = this.stream < maxAllocated ? this.stream : maxAllocated
    const clamped = new Map<number, bigint>()
    for (const [writerId, position] of this.#entries) {
      clamped.set(writerId, position < maxAllocated ? position : maxAllocated)
    }
    return RoomStreamToken.fromPositions(min, clamped)
  }

  /**
   * Structural equality (normalized tokens have one form, so equal text means equal tokens).
   *
   * @example
   * parseRoomStreamToken('m5~').equals(parseRoomStreamToken('s5')) // true
   */
  equals(other: RoomStreamToken): boolean {
    return this.serialize() === other.serialize()
  }

  /**
   * The text form; entries are in writer-ID order, entries ≤ min never appear.
   *
   * @example
   * RoomStreamToken.fromPositions(3n, new Map([[7, 9n], [2, 4n]])).serialize() // 'm3~2.4~7.9'
   */
  serialize(): string {
    if (this.topological !== undefined) return `t${this.topological}-${this.stream}`
    if (this.#entries.length === 0) return `s${this.stream}`
    return `m${this.stream}${this.#entries.map(([id, position]) => `~${id}.${position}`).join('')}`
  }

  /** Same as `serialize()`. */
  toString(): string {
    return this.serialize()
  }

  /** Same as `serialize()`, so tokens embed in JSON as their text form. */
  toJSON(): string {
    return this.serialize()
  }
}

/**
 * Parses a token a client sent. Accepts exactly the text `serialize` produces, plus entries
 * ≤ the minimum (dropped) and a trailing empty `~`, as Synapse does.
 *
 * @throws StorageError `ES_INVALID_TOKEN` with a message saying what is wrong: empty or longer
 *   than 2,000 characters, unknown shape, non-canonical or out-of-range numbers, negative
 *   live/vector positions, duplicate writer IDs, a historic token with writer entries.
 * @example
 * parseRoomStreamToken('s48211').stream // 48211n
 * parseRoomStreamToken('t97-48211').topological // 97n
 * parseRoomStreamToken('m48211~3.48215~7.48219').positionOf(7) // 48219n
 * parseRoomStreamToken('x1') // throws ES_INVALID_TOKEN
 */
export function parseRoomStreamToken(text: string): RoomStreamToken {
  if (typeof text !== 'string' || text.length === 0) throw invalid('empty stream token')
  if (text.length > maxRoomStreamTokenLength) {
    throw invalid(`stream token is ${text.length} characters long, more than ${maxRoomStreamTokenLength}`)
  }
  const shape = text[0]
  const body = text.slice(1)
  if (shape === 's') return RoomStreamToken.live(parseNumber(body, 'stream position', text))
  if (shape === 't') {
    if (body.includes('~')) throw invalid(`historic token ${quote(text)} cannot carry writer positions`)
    const dash = body.indexOf('-')
    if (dash < 0) throw invalid(`historic token ${quote(text)} must look like t<depth>-<stream>`)
    const depth = parseNumber(body.slice(0, dash), 'depth', text)
    const streamText = body.slice(dash + 1)
    const stream = streamText.startsWith('-')
      ? -parseNumber(streamText.slice(1), 'stream position', text, true)
      : parseNumber(streamText, 'stream position', text)
    return RoomStreamToken.historic(depth, stream)
  }
  if (shape === 'm') {
    const parts = body.split('~')
    if (parts.length > 1 && parts.at(-1) === '') parts.pop()
    const min = parseNumber(parts[0] ?? '', 'minimum position', text)
    const positions = new Map<number, bigint>()
    for (const part of parts.slice(1)) {
      const dot = part.indexOf('.')
      if (dot < 0) throw invalid(`writer entry ${quote(part)} of token ${quote(text)} must look like <writerId>.<pos>`)
      const writerText = part.slice(0, dot)
      if (!/^(0|[1-9][0-9]{0,9})$/.test(writerText) || Number(writerText) > maxWriterId) {
        throw invalid(`writer ID ${quote(writerText)} of token ${quote(text)} is not an integer in [0, ${maxWriterId}]`)
      }
      const writerId = Number(writerText)
      if (positions.has(writerId)) throw invalid(`writer ${writerId} appears twice in token ${quote(text)}`)
      positions.set(writerId, parseNumber(part.slice(dot + 1), `position of writer ${writerId}`, text))
    }
    return RoomStreamToken.fromPositions(min, positions)
  }
  throw invalid(`stream token ${quote(text)} must start with s, t or m`)
}

/**
 * Orders two historic tokens (or an event's `(depth, stream_ordering)` wrapped with
 * `RoomStreamToken.historic`) by the pair `(depth, stream)`: the topological order of
 * `/messages`. Total, unlike `isBeforeOrEqual`.
 *
 * @throws StorageError `ES_INVALID_TOKEN` when either token is not historic.
 * @example
 * compareTopological(parseRoomStreamToken('t5-10'), parseRoomStreamToken('t5-12')) // -1
 * compareTopological(parseRoomStreamToken('t6-1'), parseRoomStreamToken('t5-12')) // 1
 */
export function compareTopological(a: RoomStreamToken, b: RoomStreamToken): -1 | 0 | 1 {
  if (a.topological === undefined || b.topological === undefined) {
    throw invalid('topological comparison needs two historic (t) tokens')
  }
  if (a.topological !== b.topological) return a.topological < b.topological ? -1 : 1
  if (a.stream !== b.stream) return a.stream < b.stream ? -1 : 1
  return 0
}

function parseNumber(digits: string, what: string, token: string, negated = false): bigint {
  if (!/^(0|[1-9][0-9]{0,18})$/.test(digits)) {
    throw invalid(`${what} ${quote(digits)} of token ${quote(token)} is not a canonical non-negative integer`)
  }
  const value = BigInt(digits)
  if (negated && value === 0n) throw invalid(`${what} of token ${quote(token)} is a negative zero`)
  const limit = negated ? maxStreamPosition + 1n : maxStreamPosition
  if (value > limit) throw invalid(`${what} of token ${quote(token)} is outside the 64-bit range`)
  return value
}

function checkPosition(position: bigint, what: string): void {
  if (typeof position !== 'bigint' || position < 0n || position > maxStreamPosition) {
    throw invalid(`${what} ${String(position)} is not in [0, 2^63-1]`)
  }
}

function checkWriterId(writerId: number): void {
  if (!Number.isInteger(writerId) || writerId < 0 || writerId > maxWriterId) {
    throw invalid(`writer ID ${String(writerId)} is not an integer in [0, ${maxWriterId}]`)
  }
}

function quote(text: string): string {
  return JSON.stringify(text.length > 80 ? `${text.slice(0, 80)}…` : text)
}

function invalid(message: string): StorageError {
  return new StorageError('ES_INVALID_TOKEN', message)
}
