import { randomBytes } from 'node:crypto'
import { expect } from 'chai'
import type { Kysely } from 'kysely'
import type { Database } from '../../../storage/schema.js'
import { eventually, loadSend, runLoad } from './load.js'
import { expectSendsExactlyOnce } from './stored-events.js'
import { startSyncLoop } from './sync-loop.js'

/** A load of messages with a crash in the middle (see `loadWithCrash`). */
export interface CrashLoad {
  /** Where the stored events are checked. */
  readonly db: Kysely<Database>
  /** The client URL `/sync` is read from, and the reader's access token. */
  readonly clientUrl: string
  readonly accessToken: string
  /** Rooms the messages go to, round robin. */
  readonly rooms: readonly string[]
  readonly sends: number
  /** The crash comes once this many sends were acknowledged. */
  readonly crashAfterAcks: number
  /** Sends one message, retrying with the same txn ID until acknowledged; answers its event ID. */
  readonly send: (roomId: string, txnId: string, body: string) => Promise<string>
  readonly crash: () => void
}

/**
 * Sends `load.sends` messages from 32 concurrent clients, calls `load.crash()` once
 * `load.crashAfterAcks` were acknowledged, waits until `/sync` delivered every acknowledged
 * event, and checks that each is stored and synced exactly once. Answers how many syncs failed
 * on the way.
 *
 * @example
 * const { syncFailures } = await loadWithCrash({ ...load, crash: () => process.kill(pid, 'SIGKILL') })
 */
export async function loadWithCrash(load: CrashLoad): Promise<{ syncFailures: number }> {
  const label = randomBytes(3).toString('hex')
  const sync = startSyncLoop(load.clientUrl, load.accessToken)
  const acked = new Map<number, string>()
  let crashed = false
  try {
    await runLoad(load.sends, 32, async (i) => {
      const { txnId, body } = loadSend(label, i)
      acked.set(i, await load.send(load.rooms[i % load.rooms.length]!, txnId, body))
      if (acked.size >= load.crashAfterAcks && !crashed) {
        crashed = true
        load.crash()
      }
    })
    expect(crashed, 'the crash happened during the load').to.equal(true)
    expect(acked.size, 'every send acknowledged in the end').to.equal(load.sends)
    await eventually('sync delivered every acknowledged event', () => [...acked.values()].every((id) => sync.seen.has(id)))
  } finally {
    await sync.stop()
  }
  await expectSendsExactlyOnce(load.db, load.rooms, label, acked, sync)
  return { syncFailures: sync.failures }
}
