import { setTimeout as sleep } from 'node:timers/promises'
import { expect } from 'chai'
import { parseSyncToken } from '../../../storage/sync.js'

/** A Matrix client's `/sync` loop, recording what it saw (see `startSyncLoop`). */
export interface SyncLoop {
  /** How often each `m.room.message` event ID arrived in a timeline. */
  readonly seen: Map<string, number>
  /** Every `next_batch`, in order. */
  readonly tokens: string[]
  /** Problems found on the way (a token going backwards, a limited incremental timeline). */
  readonly problems: string[]
  /** Answers other than 200 and transport errors (each was retried with the same `since`). */
  failures: number
  /** Those failures by HTTP status (`error`: no answer). */
  readonly failureStatuses: Record<string, number>
  /** Stops after the running request and resolves once the loop ended. */
  stop(): Promise<void>
}

interface SyncBody {
  next_batch: string
  rooms?: { join?: Record<string, { timeline?: { limited?: boolean; events?: { event_id: string; type: string }[] } }> }
}

/**
 * Syncs as a client does: an initial sync, then incremental syncs from each `next_batch`
 * (long-poll `timeoutMs`), retrying failures with the same `since`. Timelines ask for up to
 * 1000 events, so a test that sends fewer per room between two syncs must never see `limited`.
 *
 * @example
 * const loop = startSyncLoop(clientUrl, accessToken)
 * await eventually('all seen', () => ids.every((id) => loop.seen.has(id)))
 * await loop.stop()
 */
export function startSyncLoop(base: string, accessToken: string, timeoutMs = 500): SyncLoop {
  const filter = encodeURIComponent(JSON.stringify({ room: { timeline: { limit: 1000 } } }))
  let stopped = false
  const loop: Omit<SyncLoop, 'stop'> = { seen: new Map(), tokens: [], problems: [], failures: 0, failureStatuses: {} }
  const done = (async () => {
    while (!stopped) {
      const since = loop.tokens.at(-1)
      const query = `filter=${filter}&timeout=${since === undefined ? 0 : timeoutMs}${since === undefined ? '' : `&since=${encodeURIComponent(since)}`}`
      let body: SyncBody | undefined
      let status = 'error'
      try {
        const res = await fetch(`${base}/_matrix/client/v3/sync?${query}`, {
          headers: { authorization: `Bearer ${accessToken}` },
          signal: AbortSignal.timeout(timeoutMs + 10_000),
        })
        status = String(res.status)
        if (res.status === 200) body = (await res.json()) as SyncBody
        else await res.body?.cancel()
      } catch {
        body = undefined
      }
      if (body === undefined) {
        loop.failures += 1
        loop.failureStatuses[status] = (loop.failureStatuses[status] ?? 0) + 1
        await sleep(100)
        continue
      }
      if (since !== undefined) {
        try {
          expectNotBackwards(since, body.next_batch)
        } catch (err) {
          loop.problems.push((err as Error).message)
        }
      }
      for (const [roomId, room] of Object.entries(body.rooms?.join ?? {})) {
        if (since !== undefined && room.timeline?.limited === true) loop.problems.push(`limited incremental timeline in ${roomId}`)
        for (const event of room.timeline?.events ?? []) {
          if (event.type === 'm.room.message') loop.seen.set(event.event_id, (loop.seen.get(event.event_id) ?? 0) + 1)
        }
      }
      loop.tokens.push(body.next_batch)
    }
  })()
  return Object.assign(loop, {
    async stop() {
      stopped = true
      await done
    },
  })
}

/**
 * Asserts `next` does not go backwards from `previous` (sync `next_batch` tokens).
 *
 * @example
 * expectNotBackwards('s10_0_1_1_1_1', 's12_0_1_1_2_1')
 */
export function expectNotBackwards(previous: string, next: string): void {
  const a = parseSyncToken(previous)
  const b = parseSyncToken(next)
  expect(a.room.isBeforeOrEqual(b.room), `room token ${b.room.toString()} is behind ${a.room.toString()}`).to.equal(true)
  expect(b.accountData >= a.accountData, `account data position ${b.accountData} is behind ${a.accountData}`).to.equal(true)
  expect((b.ephemeral ?? 0n) >= (a.ephemeral ?? 0n), `ephemeral position ${b.ephemeral} is behind ${a.ephemeral}`).to.equal(true)
  expect((b.toDevice ?? 0n) >= (a.toDevice ?? 0n), `to-device position ${b.toDevice} is behind ${a.toDevice}`).to.equal(true)
  expect((b.presence ?? 0n) >= (a.presence ?? 0n), `presence position ${b.presence} is behind ${a.presence}`).to.equal(true)
  expect((b.deviceLists ?? 0n) >= (a.deviceLists ?? 0n), `device lists position ${b.deviceLists} is behind ${a.deviceLists}`).to.equal(true)
}
