import { createServer, type Server } from 'node:net'

/**
 * `n` distinct TCP ports free on 127.0.0.1 right now: all are bound at once and then released
 * together, so they differ from each other (ports taken one call after another may not: the
 * kernel can hand a just-released port out again). Someone else may take one before the caller
 * binds it, which on a loopback-only machine is rare enough to answer with a restart.
 *
 * @example
 * const [router, metrics] = await freePorts(2) // e.g. [40121, 38877]
 */
export async function freePorts(n: number): Promise<number[]> {
  const servers: Server[] = []
  try {
    const ports: number[] = []
    for (let i = 0; i < n; i++) {
      const server = createServer()
      servers.push(server)
      ports.push(await listenOnAnyPort(server))
    }
    return ports
  } finally {
    await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))))
  }
}

/** One TCP port free on 127.0.0.1 right now (see `freePorts`). */
export async function freePort(): Promise<number> {
  const [port] = await freePorts(1)
  return port as number
}

function listenOnAnyPort(server: Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      resolve(typeof address === 'object' && address !== null ? address.port : 0)
    })
  })
}
