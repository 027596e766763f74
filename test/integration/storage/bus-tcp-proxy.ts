import { createConnection, createServer, type Server, type Socket } from 'node:net'

/**
 * A TCP relay to a real server, for outage tests that must not disturb that server (the
 * shared test Postgres): `stop()` refuses new connections and cuts the open ones, `start()`
 * listens again on the same port.
 *
 * @example
 * const proxy = await startTcpProxy('127.0.0.1', 5432)
 * const url = `postgres://postgres@127.0.0.1:${proxy.port}/postgres`
 * await proxy.stop(); await proxy.start(); await proxy.stop()
 */
export interface TcpProxy {
  readonly port: number
  start(): Promise<void>
  /** Idempotent. */
  stop(): Promise<void>
}

export async function startTcpProxy(targetHost: string, targetPort: number): Promise<TcpProxy> {
  const sockets = new Set<Socket>()
  let server: Server | undefined
  let port = 0

  const listen = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const listening = createServer((client) => {
        const upstream = createConnection({ host: targetHost, port: targetPort })
        for (const socket of [client, upstream]) {
          sockets.add(socket)
          socket.on('close', () => sockets.delete(socket))
          socket.on('error', () => {
            client.destroy()
            upstream.destroy()
          })
        }
        client.pipe(upstream)
        upstream.pipe(client)
      })
      listening.once('error', reject)
      listening.listen(port, '127.0.0.1', () => {
        const address = listening.address()
        if (typeof address === 'object' && address) port = address.port
        server = listening
        resolve()
      })
    })

  await listen()
  return {
    get port() {
      return port
    },
    async start() {
      if (!server) await listen()
    },
    async stop() {
      const running = server
      server = undefined
      if (!running) return
      const closed = new Promise<void>((resolve) => running.close(() => resolve()))
      for (const socket of sockets) socket.destroy()
      await closed
    },
  }
}
