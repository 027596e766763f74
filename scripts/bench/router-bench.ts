/**
 * The router benchmark: CPU per proxied request of `myelin cluster`'s router, in a process of its
 * own, under the e2e load's request mix (C = 64 clients sending into 32 rooms, keep-alive), next
 * to two baselines measured in the same run on the same upstreams:
 * - `node-http-undici`: a bare forwarder on node:http and an undici Pool with the same routing,
 *   but none of the router's header filtering, metrics, retries or abort handling;
 * - `tcp-pipe`: connections piped to one upstream, no HTTP parsing (the floor).
 * The upstreams are minimal fastify servers answering like a send. Reported per variant: proxied
 * requests/s and proxy CPU µs per request (medians of the repeats); `ratio` is the router's CPU
 * per request over node-http-undici's (below 1: the router is cheaper).
 */
import { fork, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import Fastify, { type FastifyInstance } from 'fastify'
import { Pool } from 'undici'
import type { BenchContext, BenchResult } from './context.js'
import { ratio, spread, type Spread } from './stats.js'

const variants = ['router', 'node-http-undici', 'tcp-pipe'] as const
type Variant = (typeof variants)[number]

interface RouterBenchResult extends BenchResult {
  readonly benchmark: 'router.proxy'
  readonly variant: Variant
  readonly concurrency: number
  readonly requestsPerS: Spread
  readonly cpuUsPerRequest: Spread
  readonly ratioMeaning: string
}

async function upstream(): Promise<FastifyInstance> {
  const app = Fastify()
  let n = 0
  app.put('/_matrix/client/v3/rooms/:room/send/:type/:txn', async () => ({ event_id: `$${(n++).toString(36).padStart(43, 'A')}` }))
  await app.listen({ port: 0, host: '127.0.0.1' })
  return app
}

function startProxy(variant: Variant, ports: number[]): Promise<{ child: ChildProcess; port: number }> {
  const child = fork(fileURLToPath(new URL('./router-proxy.ts', import.meta.url)), [variant, ...ports.map(String)], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
  })
  return new Promise((resolve, reject) => {
    child.stdout?.once('data', (line: Buffer) => resolve({ child, port: (JSON.parse(String(line)) as { port: number }).port }))
    child.once('exit', (code) => reject(new Error(`proxy ${variant} exited (${code})`)))
  })
}

const cpuOf = (child: ChildProcess): Promise<number> =>
  new Promise((resolve) => {
    child.once('message', (usage) => resolve((usage as { user: number; system: number }).user + (usage as { system: number }).system))
    child.send('cpu')
  })

/** Closed-loop sends through `port` for `ms`; returns how many completed. */
async function load(port: number, concurrency: number, ms: number, run: string): Promise<number> {
  const pool = new Pool(`http://127.0.0.1:${port}`, { connections: concurrency })
  const body = JSON.stringify({ msgtype: 'm.text', body: 'router bench' })
  const until = performance.now() + ms
  let done = 0
  try {
    await Promise.all(
      Array.from({ length: concurrency }, async (_, c) => {
        for (let i = 0; performance.now() < until; i++) {
          const room = encodeURIComponent(`!room${(c * 7 + i) % 32}:bench.local`)
          const res = await pool.request({
            method: 'PUT',
            path: `/_matrix/client/v3/rooms/${room}/send/m.room.message/${run}-${c}-${i}`,
            headers: { 'content-type': 'application/json', authorization: 'Bearer syt_YmVuY2g_abcdefghijklmnopqrst_0a1b2c' },
            body,
          })
          await res.body.text()
          if (res.statusCode !== 200) throw new Error(`proxied send answered ${res.statusCode}`)
          done++
        }
      }),
    )
  } finally {
    await pool.close()
  }
  return done
}

export async function run(ctx: BenchContext): Promise<RouterBenchResult[]> {
  const concurrency = 64
  const measureMs = ctx.quick ? 1000 : 5000
  const upstreams = [await upstream(), await upstream(), await upstream()]
  const ports = upstreams.map((app) => (app.server.address() as { port: number }).port)
  const samples = new Map<Variant, { perS: number[]; cpu: number[] }>(variants.map((v) => [v, { perS: [], cpu: [] }]))
  try {
    // Variants interleave within each repeat, so machine noise hits them alike.
    for (let r = 0; r < ctx.repeats; r++) {
      for (const variant of variants) {
        ctx.progress(`router [${r + 1}/${ctx.repeats}]: ${variant}, C=${concurrency}, ${measureMs / 1000} s`)
        const { child, port } = await startProxy(variant, ports)
        try {
          await load(port, concurrency, ctx.quick ? 300 : 1500, `w${r}`)
          const cpu0 = await cpuOf(child)
          const started = performance.now()
          const done = await load(port, concurrency, measureMs, `m${r}`)
          const cpu1 = await cpuOf(child)
          const sample = samples.get(variant) as { perS: number[]; cpu: number[] }
          sample.perS.push(done / ((performance.now() - started) / 1000))
          sample.cpu.push((cpu1 - cpu0) / Math.max(1, done))
        } finally {
          child.kill()
        }
      }
    }
  } finally {
    await Promise.all(upstreams.map((app) => app.close()))
  }
  const reference = spread((samples.get('node-http-undici') as { cpu: number[] }).cpu, 1).median
  return variants.map((variant) => {
    const { perS, cpu } = samples.get(variant) as { perS: number[]; cpu: number[] }
    const cpuUsPerRequest = spread(cpu, 1)
    return {
      benchmark: 'router.proxy',
      variant,
      concurrency,
      requestsPerS: spread(perS, 0),
      cpuUsPerRequest,
      ratio: ratio(cpuUsPerRequest.median, reference),
      ratioMeaning: 'proxy CPU per request over node:http + undici (the general-purpose stack) in the same run; below 1 is cheaper',
    }
  })
}
