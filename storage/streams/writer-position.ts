/**
 * Room hint of a stream update: the rooms touched, or `undefined` for "any room" (unknown).
 * An empty array means "no room" (an idle advance or only rolled-back IDs).
 *
 * A hint may also list the users whose membership changed (`@…` entries, Matrix user IDs),
 * after the marker `membersListed` that says the list is complete: see `streamHint` and
 * `hintedMembers`. Readers that only want rooms see user IDs as rooms nobody waits on.
 */
export type RoomHint = readonly string[] | undefined

/** Marks a hint whose `@…` entries are all the users whose membership changed (none when alone). */
export const membersListed = '@'

/**
 * The hint of a batch: its rooms (`!…`), then the marker and the users whose membership
 * changed, so readers can wake those users without reading the rows.
 *
 * @example
 * streamHint(['!a:hs'], ['@bob:hs']) // ['!a:hs', '@', '@bob:hs']
 */
export function streamHint(rooms: Iterable<string>, members: Iterable<string>): string[] {
  return [...rooms, membersListed, ...new Set(members)]
}

/**
 * The users whose membership changed in a hinted range, or `undefined` when the hint does not
 * say (no hint, or one from a writer that lists rooms only). An empty hint ("no room": an idle
 * writer following its peers) changed no membership.
 *
 * @example
 * hintedMembers(['!a:hs', '@', '@bob:hs']) // ['@bob:hs']
 * hintedMembers([]) // []
 * hintedMembers(['!a:hs']) // undefined
 */
export function hintedMembers(hint: RoomHint): string[] | undefined {
  if (hint === undefined || !listsMembers(hint)) return undefined
  return hint.filter((entry) => entry.length > 1 && entry.startsWith('@'))
}

/** Whether a hint says every membership change of its range: it has the marker, or no room at all. */
function listsMembers(hint: readonly string[]): boolean {
  return hint.length === 0 || hint.includes(membersListed)
}

/** One allocated ID and the room hint the caller gave when allocating it. */
export interface AllocatedId {
  readonly id: bigint
  readonly rooms: RoomHint
}

/**
 * In-memory position bookkeeping of one writer of a multi-writer stream: pure state, no I/O,
 * driven by `MultiWriterIdGenerator`. IDs are positive (the backfill stream is negated only at
 * the edge).
 *
 * Terms (Synapse `MultiWriterIdGenerator`, reference section 1):
 * - *unfinished*: allocated by this writer, its transaction neither committed nor rolled back.
 * - *in-flight fetch*: a `nextval` round trip not yet answered. Its IDs will be greater than
 *   the `maxSeen` recorded when it started (the sequence only grows and `maxSeen` never
 *   exceeds what the sequence handed out), so that value bounds the position meanwhile.
 * - *position*: the largest P such that none of this writer's own IDs ≤ P is unfinished, and
 *   none will ever be allocated. With nothing pending that is `maxSeen` (an idle writer
 *   advances to the highest ID it has seen allocated, so it never pins the linear position);
 *   otherwise one below the lowest unfinished ID, or the lowest in-flight bound.
 *
 * Invariants: `position` never decreases; `position < min(unfinished)`;
 * `position ≤ min(in-flight bounds)`; `position ≤ maxSeen`.
 *
 * Caller duties: `observeAllocated` MUST only be given values the sequence has really reached
 * (its own allocations, or the sequence's `last_value`), never a peer's claim: a peer ahead of
 * the sequence (a restored database) would otherwise make this writer advertise past IDs it
 * allocates later.
 *
 * @example
 * const w = new WriterPosition(10n, 10n)
 * const fetch = w.beginFetch()
 * w.endFetch(fetch, [11n, 12n]) // position stays 10
 * w.finish([{ id: 12n, rooms: ['!a:hs'] }], true) // still 10: 11 is unfinished
 * w.finish([{ id: 11n, rooms: undefined }], false) // 11 rolled back: position 12
 * w.takeHint(12n) // ['!a:hs'] (the rolled-back 11 contributes nothing)
 */
export class WriterPosition {
  #position: bigint
  #maxSeen: bigint
  readonly #unfinished = new Set<bigint>()
  /** In-flight fetch → `maxSeen` when it started. */
  readonly #inFlight = new Map<number, bigint>()
  #nextFetch = 0
  /** Hints of committed IDs above the last `takeHint` bound, until taken. */
  readonly #hints = new Map<bigint, RoomHint>()
  /**
   * Rows of this writer up to here may have no hint (an earlier process's, committed but never
   * announced before it died; a transaction whose outcome is unknown): hints covering any of
   * it are `undefined`.
   */
  #unknownUpTo: bigint | undefined
  #unknownPending = false
  #unknownEpoch = 0

  /**
   * `position`: the stored one. Rows of this writer above it (an earlier process's, committed
   * but never announced before it died) have no hint here: the first `takeHint` that passes
   * `maxSeen` answers `undefined` (any room), never a hint that would leave their rooms out.
   */
  constructor(position: bigint, maxSeen: bigint) {
    this.#position = position
    this.#maxSeen = maxSeen > position ? maxSeen : position
    if (this.#maxSeen > position) this.#unknownUpTo = this.#maxSeen
    this.#recompute()
  }

  /**
   * A transaction failed with no answer from the database (a lost connection: its commit may
   * have happened), so this writer may have rows without a hint. Every hint is `undefined` (any
   * room) until `boundUnknown` brings a sequence value read after this call, then up to it.
   */
  outcomeUnknown(): void {
    this.#unknownPending = true
    this.#unknownEpoch++
  }

  /** The current epoch of `outcomeUnknown` (read it before reading the sequence). */
  get unknownEpoch(): number {
    return this.#unknownEpoch
  }

  /** True while an unknown outcome waits for `boundUnknown`. */
  get unknownPending(): boolean {
    return this.#unknownPending
  }

  /**
   * `value`: the sequence, read after `epoch` was current. Hints up to it are `undefined`; the
   * wait ends unless another outcome became unknown since (its IDs may be above `value`).
   */
  boundUnknown(value: bigint, epoch: number): void {
    if (this.#unknownUpTo === undefined || value > this.#unknownUpTo) this.#unknownUpTo = value
    if (epoch === this.#unknownEpoch) this.#unknownPending = false
  }

  /** The advertised position (see the class comment). */
  get position(): bigint {
    return this.#position
  }

  /** Highest ID known to be allocated by anyone. */
  get maxSeen(): bigint {
    return this.#maxSeen
  }

  /** True when nothing is unfinished or in flight. */
  get idle(): boolean {
    return this.#unfinished.size === 0 && this.#inFlight.size === 0
  }

  /** This writer's unfinished IDs, ascending. */
  unfinished(): bigint[] {
    return [...this.#unfinished].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
  }

  /** Records that the sequence reached `value` (caller duty in the class comment). */
  observeAllocated(value: bigint): void {
    if (value > this.#maxSeen) {
      this.#maxSeen = value
      this.#recompute()
    }
  }

  /** Call synchronously before sending `nextval`; returns the fetch's handle. */
  beginFetch(): number {
    const fetch = this.#nextFetch++
    this.#inFlight.set(fetch, this.#maxSeen)
    return fetch
  }

  /** The fetch answered with `ids` (now unfinished), or failed (`undefined`). */
  endFetch(fetch: number, ids: readonly bigint[] | undefined): void {
    for (const id of ids ?? []) {
      this.#unfinished.add(id)
      if (id > this.#maxSeen) this.#maxSeen = id
    }
    this.#inFlight.delete(fetch)
    this.#recompute()
  }

  /**
   * The transaction holding `ids` ended: committed (their hints are kept until the position
   * passes them) or rolled back (they become gaps and carry no hint).
   */
  finish(ids: readonly AllocatedId[], committed: boolean): void {
    for (const { id, rooms } of ids) {
      if (!this.#unfinished.delete(id)) continue
      if (committed) this.#hints.set(id, rooms)
    }
    this.#recompute()
  }

  /**
   * Removes and merges the hints of committed IDs ≤ `upTo`: `undefined` (any room) when one of
   * them had no hint or rows without a hint may lie there (see `outcomeUnknown`), else the
   * union of their rooms (empty when there were none). The union lists members (`membersListed`)
   * only when every merged hint did: one that listed rooms only leaves its members unknown.
   */
  takeHint(upTo: bigint): RoomHint {
    const entries = new Set<string>()
    let any = this.#unknownPending || this.#unknownUpTo !== undefined
    let membersUnknown = false
    if (!this.#unknownPending && this.#unknownUpTo !== undefined && upTo >= this.#unknownUpTo) this.#unknownUpTo = undefined
    for (const [id, hint] of this.#hints) {
      if (id > upTo) continue
      this.#hints.delete(id)
      if (hint === undefined) any = true
      else {
        if (!listsMembers(hint)) membersUnknown = true
        for (const entry of hint) entries.add(entry)
      }
    }
    if (any) return undefined
    if (membersUnknown) entries.delete(membersListed)
    return [...entries]
  }

  #recompute(): void {
    let bound: bigint | undefined
    for (const id of this.#unfinished) if (bound === undefined || id - 1n < bound) bound = id - 1n
    for (const marker of this.#inFlight.values()) if (bound === undefined || marker < bound) bound = marker
    const candidate = bound === undefined || bound > this.#maxSeen ? this.#maxSeen : bound
    if (candidate > this.#position) this.#position = candidate
  }
}
