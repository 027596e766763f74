import { createServer } from 'node:net'

/**
 * A TCP port free on 127.0.0.1 right now (the kernel picks it; someone else may take it before
 * the caller binds, which on a loopback-only machine is rare enough to answer with a restart).
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      const port = typeof address === 'object' && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })
}
