import { connect, type Socket } from 'node:net'

/** A connection to an upstream. */
export interface UpstreamConnection {
  readonly socket: Socket
}

/** An error of a connection that never opened: the request cannot have reached the upstream. */
export class ConnectError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message)
    this.name = 'ConnectError'
  }
}

const noop = (): void => {}

/**
 * Keep-alive TCP connections to the router's upstreams, by origin (`host:port`): `acquire`
 * hands out the most recently idle one (LIFO, so surplus connections age out) or opens a new
 * one; `release` takes a connection back after a complete exchange. Idle connections close after
 * `keepAliveTimeoutMs` (below the workers' own keep-alive timeout, so the router is the side
 * that closes) and leave the pool as soon as the upstream closes them.
 */
export class UpstreamPool {
  readonly #idle = new Map<string, Socket[]>()
  /** Per idle connection, what takes its idle-time listeners off again. */
  readonly #unwatch = new WeakMap<Socket, () => void>()
  #closed = false

  constructor(
    private readonly keepAliveTimeoutMs: number,
    private readonly connectTimeoutMs: number,
  ) {}

  /**
   * An open connection to `host:port`.
   *
   * @throws ConnectError when the connection cannot be opened (refused, unreachable, timeout).
   */
  acquire(host: string, port: number): Promise<UpstreamConnection> {
    const idle = this.#idle.get(originOf(host, port))
    const socket = idle?.pop()
    if (socket !== undefined) {
      this.#unwatch.get(socket)?.()
      socket.resume()
      return Promise.resolve({ socket })
    }
    return new Promise((resolve, reject) => {
      const fresh = connect({ host, port, noDelay: true })
      fresh.on('error', noop)
      const fail = (err: Error & { code?: string }): void => {
        fresh.destroy()
        reject(new ConnectError(err.code ?? 'ECONNREFUSED', err.message))
      }
      fresh.once('error', fail)
      fresh.setTimeout(this.connectTimeoutMs, () => fail(Object.assign(new Error(`connect to ${host}:${port} timed out`), { code: 'CONNECT_TIMEOUT' })))
      fresh.once('connect', () => {
        fresh.off('error', fail)
        fresh.setTimeout(0)
        fresh.removeAllListeners('timeout')
        resolve({ socket: fresh })
      })
    })
  }

  /** Returns a connection whose last exchange completed; `keep` false (or a closed pool) closes it. */
  release(host: string, port: number, socket: Socket, keep: boolean): void {
    if (!keep || this.#closed || socket.destroyed || socket.readableEnded) {
      socket.destroy()
      return
    }
    const origin = originOf(host, port)
    let idle = this.#idle.get(origin)
    if (idle === undefined) this.#idle.set(origin, (idle = []))
    const list = idle
    const drop = (): void => {
      const at = list.indexOf(socket)
      if (at !== -1) list.splice(at, 1)
      socket.destroy()
    }
    // Bytes from an idle upstream are a protocol error; the upstream closing it is routine.
    const events = ['close', 'end', 'data', 'timeout'] as const
    for (const event of events) socket.on(event, drop)
    socket.setTimeout(this.keepAliveTimeoutMs)
    this.#unwatch.set(socket, () => {
      for (const event of events) socket.off(event, drop)
      socket.setTimeout(0)
      this.#unwatch.delete(socket)
    })
    list.push(socket)
  }

  /** Closes the idle connections of every origin not in `live` (upstreams that left the set). */
  retire(live: ReadonlySet<string>): void {
    for (const [origin, idle] of this.#idle) {
      if (live.has(origin)) continue
      this.#idle.delete(origin)
      for (const socket of idle) socket.destroy()
    }
  }

  /** Closes every idle connection; later releases close theirs. */
  close(): void {
    this.#closed = true
    this.retire(new Set())
  }
}

/** The pool key of an upstream. */
export function originOf(host: string, port: number): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`
}
