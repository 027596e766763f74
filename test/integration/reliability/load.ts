import { setTimeout as sleep } from 'node:timers/promises'

/** Driving concurrent load, and waiting for its effects. */

/**
 * Runs `task(i)` for `i` in `[0, count)` with at most `concurrency` in flight, until every task
 * ran or `stopped()` turns true (tasks not started by then are skipped).
 *
 * @example
 * await runLoad(100, 16, async (i) => { await send(i) }, () => killed)
 */
export async function runLoad(count: number, concurrency: number, task: (i: number) => Promise<void>, stopped: () => boolean = () => false): Promise<void> {
  let next = 0
  const worker = async () => {
    while (next < count && !stopped()) await task(next++)
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
}

/** Waits until `check()` is true (polling), or fails with `what`. */
export async function eventually(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await check()) return
    await sleep(100)
  }
  throw new Error(`timed out waiting for ${what}`)
}

/** The client txn ID and the (unique) body of send `i` of a load labelled `label`. */
export function loadSend(label: string, i: number): { txnId: string; body: string } {
  return { txnId: `${label}-${i}`, body: `${label} message ${i}` }
}
