import { randomBytes } from 'node:crypto'

/**
 * The per-connection memory of simplified sliding sync (MSC4186, api/routes/sliding-sync.ts):
 * what each connection's client holds, by position (`pos`). It lives in the api worker's memory:
 * the router and the proxy configuration send all of a user's sync requests to one api worker.
 * A worker that shuts down saves its connections (`entries`) and the worker that next sees one of
 * their positions takes it in (`adopt`; api/routes/sliding-sync.ts does both). A `pos` no process
 * knows (its worker crashed, or the connection was idle too long) is answered `M_UNKNOWN_POS`, and
 * the client starts the connection afresh, as the MSC intends.
 *
 * Each connection keeps the state of its last two positions: a client that retries a request
 * whose answer it lost sends the earlier `pos` again and gets a fresh answer from it.
 */
export class SlidingConnections<S> {
  readonly #connections = new Map<string, { positions: Map<string, S>; touched: number }>()
  /** Positions made here start with this, so that a `pos` of an earlier run is never taken for one of this run. */
  readonly #run = randomBytes(4).toString('hex')
  #next = 0

  /**
   * @param maxConnections connections kept at most; the least recently used go first.
   * @param idleMs a connection unused this long is forgotten.
   */
  constructor(
    private readonly maxConnections = 10_000,
    readonly idleMs = 30 * 60_000,
    private readonly clock: () => number = Date.now,
  ) {}

  /** The state `pos` names on connection `key`: `fresh` without a pos, `unknown` for one not (or no longer) known. */
  lookup(key: string, pos: string | undefined): S | 'fresh' | 'unknown' {
    if (pos === undefined) return 'fresh'
    const connection = this.#connections.get(key)
    if (connection === undefined || this.clock() - connection.touched > this.idleMs) return 'unknown'
    return connection.positions.get(pos) ?? 'unknown'
  }

  /**
   * Stores `state` under a new position of connection `key`, made from the state at `from`
   * (undefined: the connection starts afresh and forgets what it had). Keeps `from` (a retry
   * may come with it) and forgets older positions. Returns the new `pos`.
   */
  store(key: string, from: string | undefined, state: S): string {
    const pos = `${this.#run}_${(this.#next++).toString(36)}`
    const previous = this.#connections.get(key)
    const positions = new Map<string, S>()
    const kept = from === undefined ? undefined : previous?.positions.get(from)
    if (from !== undefined && kept !== undefined) positions.set(from, kept)
    positions.set(pos, state)
    // Re-inserted: the Map's order is least recently used first.
    this.#connections.delete(key)
    this.#connections.set(key, { positions, touched: this.clock() })
    this.#evict()
    return pos
  }

  /** Every connection held, least recently used first, with its positions and when it was last used. */
  entries(): { key: string; positions: [string, S][]; touched: number }[] {
    return [...this.#connections].map(([key, connection]) => ({ key, positions: [...connection.positions], touched: connection.touched }))
  }

  /**
   * Takes in a connection saved by another process (or an earlier run of this one), with the
   * positions it had. A connection this process already holds, or one idle too long, is left as is.
   */
  adopt(key: string, positions: readonly (readonly [string, S])[], touched: number): void {
    if (this.#connections.has(key) || this.clock() - touched > this.idleMs) return
    this.#connections.set(key, { positions: new Map(positions), touched })
    this.#evict()
  }

  /** Connections held. */
  get size(): number {
    return this.#connections.size
  }

  #evict(): void {
    const now = this.clock()
    for (const [key, connection] of this.#connections) {
      if (this.#connections.size <= this.maxConnections && now - connection.touched <= this.idleMs) break
      this.#connections.delete(key)
    }
  }
}
