import { silentLogger, type Logger } from '../logger.js'
import type { Bus, BusState } from './bus.js'
import { BusEndpoint, busUnavailable } from './bus-endpoint.js'
import type { BusMessage } from './bus-message.js'

/**
 * The shared channel of in-process buses: every started bus created from one hub receives
 * what any of them publishes. Lines are encoded and decoded exactly as on the real wire, so
 * validation and hint dropping behave the same.
 *
 * `disconnect()` / `reconnect()` simulate a transport outage for tests of consumers: buses go
 * `down`, publishes reject, nothing is delivered (messages published meanwhile are lost, as
 * with Redis), then `up` again.
 *
 * @example
 * const hub = new MemoryBusHub()
 * const persister = createMemoryBus({ hub }), reader = createMemoryBus({ hub })
 * await Promise.all([persister.start(), reader.start()])
 * reader.subscribe((m) => console.log(m))
 * await persister.publish({ type: 'REPLICATE', from: 'persister1' }) // reader logs it (in a microtask)
 */
export class MemoryBusHub {
  readonly #members = new Set<MemoryBusMember>()
  #connected = true

  /** False between `disconnect()` and `reconnect()`. */
  get connected(): boolean {
    return this.#connected
  }

  /** Simulates losing the transport: every bus of the hub goes `down`. */
  disconnect(): void {
    this.#connected = false
    for (const member of [...this.#members]) member.setState('down')
  }

  /** Ends a simulated outage: every started bus of the hub goes `up`. */
  reconnect(): void {
    this.#connected = true
    for (const member of [...this.#members]) member.setState('up')
  }

  /** Delivers a raw line to every started bus, as if received from the wire (for tests of malformed input). */
  publishRaw(line: string): void {
    if (!this.#connected) return
    for (const member of [...this.#members]) queueMicrotask(() => member.deliverLine(line))
  }

  /** @internal */
  join(member: MemoryBusMember): void {
    this.#members.add(member)
    if (this.#connected) member.setState('up')
  }

  /** @internal */
  leave(member: MemoryBusMember): void {
    this.#members.delete(member)
  }
}

interface MemoryBusMember {
  setState(state: BusState): void
  deliverLine(line: string): void
}

/** Options of `createMemoryBus`. */
export interface MemoryBusOptions {
  /** The channel to join; a fresh private hub when omitted (the bus then only hears itself). */
  hub?: MemoryBusHub
  log?: Logger
  /** How long `start()` waits for a disconnected hub; default 10,000 ms. */
  startTimeoutMs?: number
}

/**
 * An in-process bus (monolith, tests). `start` and `close` do no I/O; publishes are delivered
 * asynchronously (one microtask per receiver, in publish order) to mirror the real transports.
 *
 * @example
 * const bus = createMemoryBus({ log })
 * await bus.start()
 * bus.subscribe((m) => console.log(m.type))
 * await bus.publish({ type: 'REPLICATE', from: 'main' }) // logs 'REPLICATE' in a microtask
 */
export function createMemoryBus(options: MemoryBusOptions = {}): Bus {
  const hub = options.hub ?? new MemoryBusHub()
  const log = (options.log ?? silentLogger()).child({ component: 'bus', transport: 'memory' })
  const startTimeoutMs = options.startTimeoutMs ?? 10_000
  const endpoint = new BusEndpoint(log)
  const member: MemoryBusMember = {
    setState: (state) => endpoint.setState(state),
    deliverLine: (line) => endpoint.deliverLine(line),
  }

  return {
    transport: 'memory',
    get state() {
      return endpoint.state
    },
    start: () => endpoint.start(() => hub.join(member), startTimeoutMs, 'the in-process bus is disconnected'),
    async publish(message: BusMessage) {
      const line = endpoint.encodeForPublish(message)
      if (!hub.connected) throw busUnavailable('the in-process bus is disconnected')
      hub.publishRaw(line)
    },
    subscribe: (handler) => endpoint.subscribe(handler),
    onStateChange: (handler) => endpoint.onStateChange(handler),
    async close() {
      hub.leave(member)
      endpoint.close()
    },
  }
}
