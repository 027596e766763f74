import { StorageError } from '../errors.js'
import type { Logger } from '../logger.js'
import type { BusState } from './bus.js'
import { decodeBusMessage, encodeBusMessage, type BusMessage } from './bus-message.js'

/** The `ES_UNAVAILABLE` error of a bus that cannot start or publish. */
export function busUnavailable(message: string): StorageError {
  return new StorageError('ES_UNAVAILABLE', message)
}

/**
 * The reconnect delay of a transport's `attempt`-th retry: 50 ms doubling up to `maxDelayMs`.
 *
 * @example
 * reconnectBackoff(2000)(3) // 400
 */
export function reconnectBackoff(maxDelayMs: number): (attempt: number) => number {
  return (attempt) => Math.min(50 * 2 ** Math.min(attempt, 16), maxDelayMs)
}

/**
 * The transport-independent half of every bus: message and state handlers, encoding of
 * outgoing and decoding of received lines, the state machine `down → up → down …`, and the
 * rules of `start` and `publish` (a closed bus refuses both, an unstarted one refuses to publish).
 *
 * Guarantees: handlers run synchronously, in registration order, in the order lines are
 * handed to `deliverLine`; a throwing handler is logged and the others still run; a handler
 * that unsubscribes (itself or another) during delivery does not disturb the current delivery;
 * state handlers are called only on a change of state; nothing is delivered after `close()`.
 *
 * @example
 * const endpoint = new BusEndpoint(log)
 * endpoint.subscribe((m) => console.log(m))
 * endpoint.deliverLine('REPLICATE api1') // handler called with { type: 'REPLICATE', from: 'api1' }
 */
export class BusEndpoint {
  readonly #log: Logger
  #messageHandlers: readonly ((message: BusMessage) => void)[] = []
  #stateHandlers: readonly ((state: BusState) => void)[] = []
  #state: BusState = 'down'
  #closed = false
  /** The first `start`'s wait for `up`. */
  #starting: Promise<void> | undefined
  /** Rejecters of pending `waitUntilUp` calls, run by `close()`. */
  readonly #onClose = new Set<() => void>()

  constructor(log: Logger) {
    this.#log = log
  }

  /** Current state; `down` before the first connect and after `close()`. */
  get state(): BusState {
    return this.#closed ? 'down' : this.#state
  }

  get closed(): boolean {
    return this.#closed
  }

  /** Registers a message handler; the returned function removes exactly this registration. */
  subscribe(handler: (message: BusMessage) => void): () => void {
    const entry = (message: BusMessage): void => handler(message)
    this.#messageHandlers = [...this.#messageHandlers, entry]
    return () => {
      this.#messageHandlers = this.#messageHandlers.filter((h) => h !== entry)
    }
  }

  /** Registers a state handler; the returned function removes exactly this registration. */
  onStateChange(handler: (state: BusState) => void): () => void {
    const entry = (state: BusState): void => handler(state)
    this.#stateHandlers = [...this.#stateHandlers, entry]
    return () => {
      this.#stateHandlers = this.#stateHandlers.filter((h) => h !== entry)
    }
  }

  /**
   * A transport's `start()`: the first call runs `connect` (which begins connecting in the
   * background and does not throw) and waits for the first `up`; later calls return that same
   * wait. Rejects with `ES_UNAVAILABLE` when closed, or not up within `timeoutMs` (`notUp` says
   * why).
   */
  start(connect: () => void, timeoutMs: number, notUp: string): Promise<void> {
    if (this.#closed) return Promise.reject(busUnavailable('the bus is closed'))
    this.#starting ??= (() => {
      connect()
      return this.waitUntilUp(timeoutMs, (reason) => busUnavailable(reason === 'closed' ? 'the bus was closed while starting' : notUp))
    })()
    return this.#starting
  }

  /**
   * `encode` for a publish, which a closed or unstarted bus refuses.
   *
   * @throws StorageError `ES_UNAVAILABLE` when closed or not started; `ES_INVALID_PARAM` as `encode`.
   */
  encodeForPublish(message: BusMessage): string {
    if (this.#closed) throw busUnavailable('the bus is closed')
    if (this.#starting === undefined) throw busUnavailable('the bus is not started')
    return this.encode(message)
  }

  /**
   * Encodes an outgoing message; a dropped room hint is logged (at debug when merely too
   * large, at warn when a room ID is invalid).
   *
   * @throws StorageError `ES_INVALID_PARAM`, see `encodeBusMessage`.
   */
  encode(message: BusMessage): string {
    const { line, droppedHint } = encodeBusMessage(message)
    if (droppedHint === 'too-large') this.#log.debug({ droppedHint }, 'room hint dropped from bus message')
    else if (droppedHint) this.#log.warn({ droppedHint }, 'room hint dropped from bus message')
    return line
  }

  /** Decodes a received line and delivers it; a malformed line is logged and dropped. */
  deliverLine(line: unknown): void {
    if (this.#closed) return
    const decoded = decodeBusMessage(line)
    if (!decoded.ok) {
      const sample = typeof line === 'string' ? line.slice(0, 200) : typeof line
      this.#log.warn({ reason: decoded.reason, line: sample }, 'malformed bus message dropped')
      return
    }
    for (const handler of this.#messageHandlers) {
      try {
        handler(decoded.message)
      } catch (err) {
        this.#log.error({ err, type: decoded.message.type }, 'bus message handler failed')
      }
    }
  }

  /** Moves to `state` and tells the state handlers, unless already there or closed. */
  setState(state: BusState): void {
    if (this.#closed || state === this.#state) return
    this.#state = state
    if (state === 'up') this.#log.info('bus up')
    else this.#log.warn('bus down')
    for (const handler of this.#stateHandlers) {
      try {
        handler(state)
      } catch (err) {
        this.#log.error({ err, state }, 'bus state handler failed')
      }
    }
  }

  /**
   * Resolves at the next `up` (at once when already up); rejects after `timeoutMs` or when
   * closed meanwhile.
   */
  waitUntilUp(timeoutMs: number, onFailure: (reason: 'timeout' | 'closed') => Error): Promise<void> {
    if (this.#closed) return Promise.reject(onFailure('closed'))
    if (this.#state === 'up') return Promise.resolve()
    return new Promise((resolve, reject) => {
      const finish = (error?: Error): void => {
        clearTimeout(timer)
        stop()
        this.#onClose.delete(onClose)
        if (error) reject(error)
        else resolve()
      }
      const onClose = (): void => finish(onFailure('closed'))
      const timer = setTimeout(() => finish(onFailure('timeout')), timeoutMs)
      const stop = this.onStateChange((state) => {
        if (state === 'up') finish()
      })
      this.#onClose.add(onClose)
    })
  }

  /** Stops all deliveries and state notifications for good. */
  close(): void {
    this.#closed = true
    this.#messageHandlers = []
    this.#stateHandlers = []
    for (const reject of [...this.#onClose]) reject()
  }
}
