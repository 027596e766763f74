/**
 * The proxy process of the router benchmark (`router-bench.ts` forks it): runs one proxy variant
 * in front of the upstream ports it is given, prints `{"port":N}`, and answers every IPC message
 * with its CPU time so far (`process.cpuUsage()`).
 *
 * Variants: `router` (Myelin's router), `node-http-undici` (the same routing on node:http and an
 * undici Pool, and nothing else: no header filtering, metrics, retries or abort handling),
 * `tcp-pipe` (every connection piped to the first persister, no HTTP at all: the floor of any
 * proxy on this machine).
 */
import { createServer as createHttpServer } from 'node:http'
import { connect, createServer as createNetServer, type AddressInfo } from 'node:net'
import { Pool } from 'undici'
import { classifyRequest } from '../../api/routing/path-table.js'
import { createRouter } from '../../api/routing/router.js'
import { createShardMap } from '../../persisters/shard-map.js'
import { silentLogger } from '../../storage/logger.js'

const [variant, ...ports] = process.argv.slice(2)
const [persister1, persister2, api1] = ports.map(Number) as [number, number, number]
const host = '127.0.0.1'
const shardMap = createShardMap({ writers: ['persister1', 'persister2'] })
const byWriter = new Map([['persister1', persister1], ['persister2', persister2]])

async function listen(): Promise<number> {
  if (variant === 'router') {
    const persisters = new Map([...byWriter].map(([name, port]) => [name, { name, host, port }]))
    const router = createRouter({ upstreams: { api: [{ name: 'api1', host, port: api1 }], persisters }, shardMap, log: silentLogger() })
    return (await router.listen(0, host)).port
  }
  if (variant === 'node-http-undici') {
    const pools = new Map([persister1, persister2, api1].map((port) => [port, new Pool(`http://${host}:${port}`, { connections: null })]))
    const server = createHttpServer((req, res) => {
      const route = classifyRequest(req.method ?? 'GET', req.url ?? '/')
      const port = route.kind === 'room-write' ? (byWriter.get(shardMap.ownerOf(route.roomId)) as number) : api1
      const chunks: Buffer[] = []
      req.on('data', (chunk: Buffer) => chunks.push(chunk))
      req.on('end', () => {
        const headers = { ...req.headers, 'x-forwarded-for': req.socket.remoteAddress ?? '' }
        delete headers.connection
        ;(pools.get(port) as Pool).request({ path: req.url ?? '/', method: req.method as 'GET', headers, body: Buffer.concat(chunks) }).then(
          (response) => {
            res.writeHead(response.statusCode, response.headers as Record<string, string>)
            response.body.pipe(res)
          },
          () => res.writeHead(502).end(),
        )
      })
    })
    await new Promise<void>((resolve) => server.listen(0, host, () => resolve()))
    return (server.address() as AddressInfo).port
  }
  if (variant === 'tcp-pipe') {
    const server = createNetServer((client) => {
      const upstream = connect(persister1, host)
      client.pipe(upstream).pipe(client)
      client.on('error', () => upstream.destroy())
      upstream.on('error', () => client.destroy())
    })
    await new Promise<void>((resolve) => server.listen(0, host, () => resolve()))
    return (server.address() as AddressInfo).port
  }
  throw new Error(`unknown proxy variant ${variant}`)
}

console.log(JSON.stringify({ port: await listen() }))
process.on('message', () => {
  const usage = process.cpuUsage()
  process.send?.({ user: usage.user, system: usage.system })
})
