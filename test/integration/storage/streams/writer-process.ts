/**
 * Child process of `multi-process.spec.ts`: one writer of the `events` stream. Runs
 * `MYELIN_STREAM_LOOPS` concurrent loops of transactions that allocate 1-3 IDs, print
 * `allocated <ids>` (still inside the transaction), insert the rows, wait 0-20 ms and commit
 * (or roll back one in ten). Prints `ready <position>` once started; on SIGTERM finishes its
 * transactions, closes everything and prints `stopped <position>`.
 *
 * Environment: MYELIN_STREAM_DB_URL, MYELIN_STREAM_TRANSPORT (redis | postgres),
 * MYELIN_STREAM_BUS_URL, MYELIN_STREAM_SERVER_NAME, MYELIN_STREAM_WRITER,
 * MYELIN_STREAM_WRITERS (comma-separated), MYELIN_STREAM_ROOM, MYELIN_STREAM_LOOPS.
 */
import { createDatabase } from '../../../../storage/database.js'
import { createLogger } from '../../../../storage/logger.js'
import { createIdGenerator } from '../../../../storage/streams/id-generator.js'
import { insertEventRow } from './stream-fixtures.js'
import { createTransportBus, type Transport } from './stream-bus.js'

function env(name: string): string {
  const value = process.env[name]
  if (!value) throw new Error(`${name} is not set`)
  return value
}

const writer = env('MYELIN_STREAM_WRITER')
const room = env('MYELIN_STREAM_ROOM')
const log = createLogger({ level: 'warn', name: writer })
const database = createDatabase({ url: env('MYELIN_STREAM_DB_URL'), poolSize: 6, applicationName: `stream-writer-${writer}` })
const bus = createTransportBus(env('MYELIN_STREAM_TRANSPORT') as Transport, env('MYELIN_STREAM_BUS_URL'), env('MYELIN_STREAM_SERVER_NAME'), log)
await bus.start()
const generator = await createIdGenerator({
  db: database.db,
  stream: 'events',
  writer,
  writers: env('MYELIN_STREAM_WRITERS').split(','),
  bus,
  log,
  announceIntervalMs: 100,
})
let stopping = false
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

async function loop(): Promise<void> {
  while (!stopping) {
    await generator
      .transaction(async (trx, allocate) => {
        const ids = await allocate(1 + Math.floor(Math.random() * 3), [room])
        process.stdout.write(`allocated ${ids.join(',')}\n`)
        for (const id of ids) await insertEventRow(trx, room, id, writer)
        await sleep(Math.random() * 20)
        if (Math.random() < 0.1) throw new Error('rolled back on purpose')
      })
      .catch(() => undefined)
    await sleep(Math.random() * 5)
  }
}

const loops = Array.from({ length: Number(env('MYELIN_STREAM_LOOPS')) }, () => loop())
process.stdout.write(`ready ${generator.position()}\n`)
process.once('SIGTERM', () => {
  stopping = true
  void (async () => {
    await Promise.all(loops)
    await generator.close()
    await bus.close()
    await database.close()
    process.stdout.write(`stopped ${generator.position()}\n`)
    process.exit(0)
  })()
})
