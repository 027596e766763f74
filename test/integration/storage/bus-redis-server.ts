import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createConnection } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort } from '../../../api/cli/ports.js'

/**
 * A private redis-server child process for outage tests: it can be stopped and started again
 * on the same port without disturbing the shared test Redis. Persistence is off; DEBUG is
 * enabled (for `DEBUG SLEEP`).
 *
 * @example
 * const redis = await startRedisServer()
 * await redis.stop(); await redis.start()
 * await redis.stop()
 */
export interface RedisServerProcess {
  readonly port: number
  readonly url: string
  /** Starts the server (again) on `port`; resolves once it answers PING. */
  start(): Promise<void>
  /** Stops the server (SIGTERM) and waits for the process to exit. Idempotent. */
  stop(): Promise<void>
}

export async function startRedisServer(): Promise<RedisServerProcess> {
  return spawnRedis(await freePort(), (port) => [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--save',
    '',
    '--appendonly',
    'no',
    '--enable-debug-command',
    'yes',
  ])
}

/**
 * A private Redis Sentinel monitoring the master on `masterPort` under the name `mymaster`
 * (quorum 1). `stop()` also removes its configuration folder.
 */
export async function startRedisSentinel(masterPort: number): Promise<RedisServerProcess> {
  const folder = await mkdtemp(join(tmpdir(), 'myelin-sentinel-'))
  const config = join(folder, 'sentinel.conf')
  await writeFile(config, `sentinel monitor mymaster 127.0.0.1 ${masterPort} 1\n`)
  const sentinel = await spawnRedis(await freePort(), (port) => [config, '--sentinel', '--port', String(port), '--bind', '127.0.0.1'])
  return {
    ...sentinel,
    start: () => sentinel.start(),
    async stop() {
      await sentinel.stop()
      await rm(folder, { recursive: true, force: true })
    },
  }
}

async function spawnRedis(port: number, args: (port: number) => string[]): Promise<RedisServerProcess> {
  let child: ChildProcess | undefined

  const server: RedisServerProcess = {
    port,
    url: `redis://127.0.0.1:${port}`,
    async start() {
      if (child) return
      const started = spawn('redis-server', [...args(port), '--daemonize', 'no'], { stdio: 'ignore' })
      child = started
      started.once('exit', () => {
        if (child === started) child = undefined
      })
      const deadline = Date.now() + 5000
      while (!(await answersPing(port))) {
        if (Date.now() > deadline) throw new Error(`redis-server on port ${port} did not start`)
        if (child !== started) throw new Error(`redis-server on port ${port} exited at startup`)
        await sleep(20)
      }
    },
    async stop() {
      const running = child
      if (!running) return
      const exited = once(running, 'exit')
      running.kill('SIGTERM')
      await exited
      child = undefined
    },
  }
  await server.start()
  return server
}

function answersPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ port, host: '127.0.0.1' })
    const done = (ok: boolean): void => {
      socket.destroy()
      resolve(ok)
    }
    socket.setTimeout(500, () => done(false))
    socket.once('error', () => done(false))
    socket.once('connect', () => socket.write('PING\r\n'))
    socket.once('data', (data) => done(data.toString().startsWith('+PONG')))
  })
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}
