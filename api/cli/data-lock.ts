import { readFileSync } from 'node:fs'
import { open, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { StorageError } from '../../storage/errors.js'

/** The lock file of a data folder: the PID of the `myelin cluster` using it. */
export const lockFileName = 'cluster.pid'

/**
 * Claims `dataDir` for this process until `release()`: one `myelin cluster` per data folder. A
 * second one would take over the first one's embedded PostgreSQL (as it does, on purpose, with
 * a server a SIGKILLed run left behind) and rewrite its configs. A lock whose process is gone
 * (a SIGKILLed run) is taken over.
 *
 * @throws StorageError `ES_UNAVAILABLE` when a live `myelin` process holds the folder, naming its PID.
 * @example
 * const release = await lockDataDir('./data') // writes ./data/cluster.pid
 * await release()
 */
export async function lockDataDir(dataDir: string): Promise<() => Promise<void>> {
  const file = join(dataDir, lockFileName)
  for (let attempt = 0; ; attempt++) {
    try {
      const handle = await open(file, 'wx', 0o644)
      await handle.writeFile(`${process.pid}\n`)
      await handle.close()
      return async () => {
        if (holder(file) === process.pid) await unlink(file).catch(() => {})
      }
    } catch (err) {
      if ((err as { code?: string }).code !== 'EEXIST') throw err
      // An empty file may be a lock its holder has not written yet: look again before taking it.
      const pid = holder(file) ?? (await sleep(200), holder(file))
      const live = pid !== undefined && pid !== process.pid && isMyelin(pid)
      // A second EEXIST: another cluster claimed the folder between our two attempts.
      if (live || attempt > 0) {
        throw new StorageError('ES_UNAVAILABLE', `the data folder ${dataDir} is in use by another myelin cluster (pid ${pid ?? 'unknown'}): stop it first, or pass another --data`)
      }
      await unlink(file).catch(() => {})
    }
  }
}

function holder(file: string): number | undefined {
  try {
    const pid = Number(readFileSync(file, 'utf8').trim())
    return Number.isInteger(pid) && pid > 0 ? pid : undefined
  } catch {
    return undefined
  }
}

/** Whether `pid` is a running `myelin` process (not merely a PID reused by something else). */
function isMyelin(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('main.ts')
  } catch {
    return false
  }
}
