/**
 * Sliding sync (MSC4186, api/routes/sliding-sync.ts) against `/sync`, the API it replaces, for a
 * user in many rooms, on a monolith started with the `myelin` command on a fresh durable
 * database:
 * - `sliding.initial`: the time and bytes of a fresh connection's first response for a room
 *   list's first 20 rooms (timeline 1, name, avatar and the user's own membership), against an
 *   initial `/sync` with a 1-event timeline (every room, its full state). ratio = sliding ms ÷
 *   `/sync` ms (below 1: the room list is ready sooner).
 * - `sliding.wakeup`: the time from a send's 200 to the long-polling response carrying it, on a
 *   sliding connection and on a `/sync` long-poll, in turn, the sends going to a room at the top
 *   of the list. ratio = sliding p50 ÷ `/sync` p50.
 * Medians of `ctx.repeats` rounds; in each round the two sides alternate.
 */
import type { BenchContext, BenchResult } from './context.js'
import { monolith, startOnFreshDatabase } from './e2e-bench.js'
import { forEachLimited } from '../../storage/limited.js'
import { MatrixClient, register } from './loadgen.js'
import { percentile, ratio, spread, type Spread } from './stats.js'

interface SlidingResult extends BenchResult {
  readonly benchmark: 'sliding.initial' | 'sliding.wakeup'
  readonly rooms: number
  readonly samples: number
  readonly ms: Spread
  readonly baselineMs: Spread
  readonly ratioMeaning: string
}

interface SlidingInitialResult extends SlidingResult {
  readonly responseBytes: number
  readonly baselineResponseBytes: number
}

const v3 = '/_matrix/client/v3'
const slidingPath = '/_matrix/client/unstable/org.matrix.simplified_msc3575/sync'
const enc = encodeURIComponent
const roomList = {
  ranges: [[0, 19]],
  timeline_limit: 1,
  required_state: [
    ['m.room.name', ''],
    ['m.room.avatar', ''],
    ['m.room.member', '$ME'],
  ],
}

export async function run(ctx: BenchContext): Promise<BenchResult[]> {
  const rooms = ctx.quick ? 20 : 300
  const messagesPerRoom = ctx.quick ? 2 : 5
  const samples = ctx.quick ? 2 : 10
  const deployment = await startOnFreshDatabase(ctx.adminUrl, ctx.redisUrl, monolith, 'bench_sliding')
  const client = new MatrixClient(deployment.baseUrl, 8)
  try {
    const user = await register(client, 'slider')
    ctx.progress(`sliding: creating ${rooms} rooms with ${messagesPerRoom} messages each`)
    const roomIds: string[] = []
    let txn = 0
    await forEachLimited(Array.from({ length: rooms }, (_, i) => i), 8, async (i) => {
      const { room_id: roomId } = await client.ok<{ room_id: string }>('POST', `${v3}/createRoom`, { token: user.token, body: { name: `room ${i}` } })
      roomIds.push(roomId)
      for (let m = 0; m < messagesPerRoom; m++) {
        await client.ok('PUT', `${v3}/rooms/${enc(roomId)}/send/m.room.message/b${txn++}`, { token: user.token, body: { msgtype: 'm.text', body: `message ${m}` } })
      }
    })
    // Probes go to one room, which stays at the top of the list: a woken connection sends it as
    // news. (A message in a room below the list's 20 would also bring that room in afresh.)
    const probeRoom = roomIds[0]!
    const send = () => client.ok('PUT', `${v3}/rooms/${enc(probeRoom)}/send/m.room.message/b${txn++}`, { token: user.token, body: { msgtype: 'm.text', body: 'probe' } })
    const timed = async <T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> => {
      const t0 = performance.now()
      const value = await fn()
      return { ms: performance.now() - t0, value }
    }
    const syncFilter = enc(JSON.stringify({ room: { timeline: { limit: 1 } } }))
    let conn = 0

    const initial = { sliding: [] as number[], sync: [] as number[], slidingBytes: 0, syncBytes: 0 }
    const wakeup = { sliding: [] as number[], sync: [] as number[] }
    for (let round = 0; round < ctx.repeats; round++) {
      ctx.progress(`sliding: round ${round + 1}/${ctx.repeats}`)
      const slidingMs: number[] = []
      const syncMs: number[] = []
      for (let i = 0; i < samples; i++) {
        const s = await timed(() => client.ok<object>('POST', `${slidingPath}?timeout=0`, { token: user.token, body: { conn_id: `c${conn++}`, lists: { all: roomList } } }))
        slidingMs.push(s.ms)
        initial.slidingBytes = JSON.stringify(s.value).length
        const b = await timed(() => client.ok<object>('GET', `${v3}/sync?filter=${syncFilter}&set_presence=offline`, { token: user.token }))
        syncMs.push(b.ms)
        initial.syncBytes = JSON.stringify(b.value).length
      }
      initial.sliding.push(percentile(slidingMs, 50))
      initial.sync.push(percentile(syncMs, 50))

      // Wake-ups: a long-poll is waiting when the send goes out (its request is sent first and
      // given 100 ms to park); the time is from the send's answer to the long-poll's.
      const wake = async (longPoll: () => Promise<unknown>): Promise<number> => {
        let answered = 0
        const polling = longPoll().then(() => (answered = performance.now()))
        await new Promise((resolve) => setTimeout(resolve, 100))
        await send()
        const sent = performance.now()
        await polling
        return answered - sent
      }
      const slidingWake: number[] = []
      const syncWake: number[] = []
      const connId = `w${round}`
      let pos = (await client.ok<{ pos: string }>('POST', `${slidingPath}?timeout=0`, { token: user.token, body: { conn_id: connId, lists: { all: roomList } } })).pos
      let since = (await client.ok<{ next_batch: string }>('GET', `${v3}/sync?filter=${syncFilter}&timeout=0&set_presence=offline`, { token: user.token })).next_batch
      const slide = async (timeout: number) => {
        pos = (await client.ok<{ pos: string }>('POST', `${slidingPath}?timeout=${timeout}&pos=${enc(pos)}`, { token: user.token, body: { conn_id: connId, lists: { all: roomList } } })).pos
      }
      const sync = async (timeout: number) => {
        since = (await client.ok<{ next_batch: string }>('GET', `${v3}/sync?filter=${syncFilter}&timeout=${timeout}&since=${enc(since)}&set_presence=offline`, { token: user.token })).next_batch
      }
      for (let i = 0; i < samples; i++) {
        // Each side first takes what the other side's probe sent, so that its long-poll waits.
        await slide(0)
        slidingWake.push(await wake(() => slide(30_000)))
        await sync(0)
        syncWake.push(await wake(() => sync(30_000)))
      }
      wakeup.sliding.push(percentile(slidingWake, 50))
      wakeup.sync.push(percentile(syncWake, 50))
    }

    const initialResult: SlidingInitialResult = {
      benchmark: 'sliding.initial',
      rooms,
      samples,
      ms: spread(initial.sliding, 2),
      baselineMs: spread(initial.sync, 2),
      responseBytes: initial.slidingBytes,
      baselineResponseBytes: initial.syncBytes,
      ratio: ratio(spread(initial.sliding).median, spread(initial.sync).median),
      ratioMeaning: "sliding sync's first response for 20 of the rooms ÷ an initial /sync with 1-event timelines, median ms (below 1: the room list is ready sooner)",
    }
    const wakeupResult: SlidingResult = {
      benchmark: 'sliding.wakeup',
      rooms,
      samples,
      ms: spread(wakeup.sliding, 2),
      baselineMs: spread(wakeup.sync, 2),
      ratio: ratio(spread(wakeup.sliding).median, spread(wakeup.sync).median),
      ratioMeaning: 'sliding sync long-poll wake-up ÷ /sync long-poll wake-up, p50 ms from the send answered to the long-poll answered',
    }
    return [initialResult, wakeupResult]
  } finally {
    await client.close()
    await deployment.stop()
  }
}
