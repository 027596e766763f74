import { expect } from 'chai'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { randomBytes } from 'node:crypto'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import type { Bus } from '../../../../storage/bus/bus.js'
import { silentLogger } from '../../../../storage/logger.js'
import { createStreamTracker, type StreamTracker } from '../../../../storage/streams/stream-tracker.js'
import { createTestDatabase, redisUrl, type TestDatabase } from '../../../support/db.js'
import { createTransportBus, type Transport } from './stream-bus.js'
import { createRoom, eventually } from './stream-fixtures.js'

const writerScript = fileURLToPath(new URL('./writer-process.ts', import.meta.url))
const writers = ['p1', 'p2', 'p3']
const log = silentLogger()
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** A writer child process and the lines it printed. */
class WriterProcess {
  readonly lines: string[] = []
  readonly exited: Promise<unknown>
  #waiters: { match: (line: string) => boolean; resolve: (line: string) => void }[] = []

  constructor(readonly child: ChildProcess) {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      this.lines.push(line)
      for (const waiter of [...this.#waiters]) {
        if (!waiter.match(line)) continue
        this.#waiters.splice(this.#waiters.indexOf(waiter), 1)
        waiter.resolve(line)
      }
    })
    child.stderr!.on('data', (chunk: Buffer) => process.stderr.write(chunk))
    this.exited = once(child, 'exit')
  }

  next(prefix: string, timeoutMs = 15_000): Promise<string> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no "${prefix}" line within ${timeoutMs} ms`)), timeoutMs)
      this.#waiters.push({
        match: (line) => line.startsWith(prefix),
        resolve: (line) => {
          clearTimeout(timer)
          resolve(line)
        },
      })
    })
  }
}

for (const transport of ['redis', 'postgres'] as const satisfies readonly Transport[]) {
  describe(`multi-writer streams across processes over ${transport}`, function () {
    this.timeout(30_000)
    let t: TestDatabase
    let readerBus: Bus
    let tracker: StreamTracker
    let children: WriterProcess[]
    let reading: boolean
    let reader: Promise<void> | undefined

    function spawnWriter(name: string, room: string, serverName: string): WriterProcess {
      const child = spawn(process.execPath, ['--import', 'tsx', writerScript], {
        env: {
          ...process.env,
          MYELIN_STREAM_DB_URL: t.url,
          MYELIN_STREAM_TRANSPORT: transport,
          MYELIN_STREAM_BUS_URL: transport === 'redis' ? redisUrl() : t.url,
          MYELIN_STREAM_SERVER_NAME: serverName,
          MYELIN_STREAM_WRITER: name,
          MYELIN_STREAM_WRITERS: writers.join(','),
          MYELIN_STREAM_ROOM: room,
          MYELIN_STREAM_LOOPS: '3',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      })
      const writer = new WriterProcess(child)
      children.push(writer)
      return writer
    }

    beforeEach(async () => {
      t = await createTestDatabase()
      children = []
      reading = true
      reader = undefined
    })

    afterEach(async () => {
      for (const { child } of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
      await Promise.all(children.map((c) => c.exited))
      reading = false
      await reader
      await tracker?.close()
      await readerBus?.close()
      await t.drop()
    })

    it('should converge and skip nothing when a writer is SIGKILLed mid-transaction and restarted', async () => {
      const room = await createRoom(t.db)
      const serverName = `streams-${randomBytes(4).toString('hex')}.test`
      readerBus = createTransportBus(transport, transport === 'redis' ? redisUrl() : t.url, serverName, log)
      await readerBus.start()
      tracker = createStreamTracker({ db: t.db, bus: readerBus, log, pollIntervalMs: 100 })
      await tracker.start()

      // The reader: reads each writer's rows up to the position the tracker was told.
      const readUpTo = new Map<string, bigint>()
      const seen = new Set<bigint>()
      const read = async (): Promise<void> => {
        const positions = tracker.positions()
        for (const writer of writers) {
          const upTo = positions.get(writer)
          const from = readUpTo.get(writer) ?? 0n
          if (upTo === undefined || upTo <= from) continue
          const rows = await t.db
            .selectFrom('events')
            .select('stream_ordering')
            .where('instance_name', '=', writer)
            .where('stream_ordering', '>', from)
            .where('stream_ordering', '<=', upTo)
            .execute()
          for (const row of rows) seen.add(BigInt(row.stream_ordering))
          readUpTo.set(writer, upTo)
        }
      }
      reader = (async () => {
        while (reading) {
          await read()
          await sleep(20)
        }
      })()

      const started = writers.map((name) => spawnWriter(name, room, serverName))
      await Promise.all(started.map((w) => w.next('ready')))
      await sleep(800)

      const victim = started[1]!
      const line = await victim.next('allocated')
      victim.child.kill('SIGKILL')
      await victim.exited
      const killedIds = line.slice('allocated '.length).split(',').map(BigInt)
      const pinnedAt = tracker.positions().get('p2')!
      await sleep(500)
      // Nothing of p2 can be announced while it is dead: its position stays put, and the linear
      // position cannot pass its dead IDs unless they committed (checked below).
      expect(tracker.positions().get('p2')).to.equal(pinnedAt)
      const linearWhileDead = tracker.linearPosition()

      const restarted = spawnWriter('p2', room, serverName)
      await restarted.next('ready')
      await eventually(() => tracker.positions().get('p2')! > pinnedAt, 'the restarted writer to advance')
      await sleep(800)

      const alive = [started[0]!, restarted, started[2]!]
      for (const w of alive) w.child.kill('SIGTERM')
      await Promise.all(alive.map((w) => w.next('stopped')))
      await Promise.all(alive.map((w) => w.exited))

      const stored = await t.db.selectFrom('stream_positions').select(['instance_name', 'stream_id']).where('stream_name', '=', 'events').execute()
      const expected = new Map(stored.map((row) => [row.instance_name, BigInt(row.stream_id)]))
      await eventually(() => writers.every((w) => tracker.positions().get(w) === expected.get(w)), 'the reader to converge on the stored positions', 10_000)
      reading = false
      await reader
      await read()

      const committed = await t.db.selectFrom('events').select(['stream_ordering', 'instance_name']).execute()
      expect(committed.length).to.be.greaterThan(20)
      expect(new Set(committed.map((row) => row.instance_name))).to.deep.equal(new Set(writers))
      const skipped = committed.map((row) => BigInt(row.stream_ordering)).filter((id) => !seen.has(id))
      expect(skipped).to.deep.equal([])
      const linear = [...expected.values()].reduce((a, b) => (a < b ? a : b))
      expect(tracker.linearPosition() >= linear).to.equal(true)
      // The killed transaction committed entirely or not at all; if not, its IDs are gaps the
      // linear position could not pass while p2 was dead.
      const killedRows = committed.filter((row) => killedIds.includes(BigInt(row.stream_ordering)))
      expect(killedRows.length === 0 || killedRows.length === killedIds.length).to.equal(true)
      if (killedRows.length === 0) expect(linearWhileDead < killedIds[0]!).to.equal(true)
    })
  })
}
