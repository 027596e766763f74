/**
 * The end-to-end load generator: speaks only the Matrix client-server API (register, createRoom,
 * join, send, sync), like real clients, against any homeserver URL.
 *
 * Load: C concurrent senders (closed loop: each sends, waits for the 200, sends again), each a
 * user of U, over R rooms picked uniformly or Zipf-skewed (the exponent solved so the hottest
 * room gets `hotShare` of the traffic). A separate probe measures sync wake-up: a probe user
 * long-polls /sync while another user sends into a probe room every `probeIntervalMs`; the
 * wake-up is the time from the send's 200 to the /sync response carrying that event. After the
 * load, the probe goes on alone for `idleS` (the wake-up of an idle server).
 */
import { randomUUID } from 'node:crypto'
import { Pool } from 'undici'
import { forEachLimited } from '../../storage/limited.js'
import { percentile, percentiles, round } from './stats.js'

/** How a sync probe's transaction IDs start, so a test server can tell probes from the load. */
export const probeTxnPrefix = 'probe-'

export interface LoadOptions {
  readonly baseUrl: string
  readonly users: number
  readonly rooms: number
  readonly concurrency: number
  readonly durationS: number
  /**
   * Seconds of the same load before `durationS` starts, not counted (default 0): a fresh
   * process's JIT compiles its hot paths during the first seconds of load, which a long-running
   * server has long done. Errors and lost probes count from the start all the same.
   */
  readonly warmupS?: number
  /** Called when the counted part of the load starts, after the warm-up (where callers start measuring CPU). */
  readonly onMeasureStart?: () => void
  readonly distribution: 'uniform' | 'zipf'
  /** Target share of the hottest room under Zipf (default 0.27). */
  readonly hotShare?: number
  readonly probeIntervalMs?: number
  /** Seconds the probe runs alone after the load (default 4; 0: none). */
  readonly idleS?: number
  /** Called when the senders stop, before the idle probe (where callers stop measuring CPU). */
  readonly onLoadEnd?: () => void
  /** Progress lines go here (stderr). */
  readonly progress?: (line: string) => void
}

export interface LatencySummary {
  readonly count: number
  readonly p50: number
  readonly p95: number
  readonly p99: number
  readonly max: number
}

export interface LoadResult {
  readonly events: number
  readonly errors: number
  readonly eventsPerS: number
  readonly sendMs: LatencySummary
  /** Sends into the hottest room only (Zipf). */
  readonly hotRoomSendMs: LatencySummary
  readonly hotRoomShare: number
  /** Under the load. */
  readonly syncWakeupMs: LatencySummary
  /** With only the probe running (after the load). */
  readonly idleSyncWakeupMs: LatencySummary
  /** Probes sent (under load and idle) and the ones no sync delivered within 10 s. */
  readonly probesSent: number
  readonly probesLost: number
  readonly wallS: number
}

/** One run's result with its raw latencies, which `combineRuns` pools. */
export interface LoadRun extends LoadResult {
  readonly samples: {
    readonly sendMs: readonly number[]
    readonly hotRoomSendMs: readonly number[]
    readonly syncWakeupMs: readonly number[]
    readonly idleSyncWakeupMs: readonly number[]
  }
}

export interface Session {
  readonly userId: string
  readonly token: string
}

/** Percentiles of `values` (ms), nearest rank. */
export function summarize(values: readonly number[]): LatencySummary {
  const [p50, p95, p99, max] = percentiles(values, [50, 95, 99, 100]).map((v) => round(v, 2)) as [number, number, number, number]
  return { count: values.length, p50, p95, p99, max }
}

/**
 * Several runs of the same load as one result: events/s is the median run's, the latencies are
 * percentiles of all runs' samples together (a p99 over a few hundred probes, not the slowest
 * one or two of a run), the counts are sums.
 *
 * @example
 * combineRuns([await runLoad(options), await runLoad(options), await runLoad(options)]).syncWakeupMs.p99
 */
export function combineRuns(runs: readonly LoadRun[]): LoadResult {
  if (runs.length === 0) throw new RangeError('combineRuns: no runs')
  const pooled = (pick: (samples: LoadRun['samples']) => readonly number[]) => summarize(runs.flatMap((r) => pick(r.samples)))
  const sum = (pick: (run: LoadRun) => number) => runs.reduce((total, r) => total + pick(r), 0)
  const events = sum((r) => r.events)
  const hotSends = sum((r) => r.samples.hotRoomSendMs.length)
  return {
    events,
    errors: sum((r) => r.errors),
    eventsPerS: percentile(runs.map((r) => r.eventsPerS), 50),
    sendMs: pooled((s) => s.sendMs),
    hotRoomSendMs: pooled((s) => s.hotRoomSendMs),
    hotRoomShare: events === 0 ? 0 : round(hotSends / events, 3),
    syncWakeupMs: pooled((s) => s.syncWakeupMs),
    idleSyncWakeupMs: pooled((s) => s.idleSyncWakeupMs),
    probesSent: sum((r) => r.probesSent),
    probesLost: sum((r) => r.probesLost),
    wallS: round(sum((r) => r.wallS), 1),
  }
}

/** The Zipf exponent s for which room 0 of `rooms` gets `share` of the weight (bisection). */
export function zipfExponentFor(rooms: number, share: number): number {
  const top = (s: number) => {
    let total = 0
    for (let i = 0; i < rooms; i++) total += 1 / (i + 1) ** s
    return 1 / total
  }
  let lo = 0
  let hi = 10
  for (let i = 0; i < 60; i++) {
    const mid = (lo + hi) / 2
    if (top(mid) < share) lo = mid
    else hi = mid
  }
  return (lo + hi) / 2
}

/** Cumulative weights of the room distribution. */
function roomPicker(rooms: number, distribution: LoadOptions['distribution'], hotShare: number): () => number {
  if (distribution === 'uniform') return () => Math.floor(Math.random() * rooms)
  const s = zipfExponentFor(rooms, hotShare)
  const cumulative: number[] = []
  let total = 0
  for (let i = 0; i < rooms; i++) cumulative.push((total += 1 / (i + 1) ** s))
  return () => {
    const x = Math.random() * total
    let lo = 0
    let hi = rooms - 1
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if ((cumulative[mid] as number) < x) lo = mid + 1
      else hi = mid
    }
    return lo
  }
}

/** A tiny Matrix client over one keep-alive pool. */
export class MatrixClient {
  readonly #pool: Pool
  constructor(baseUrl: string, connections: number) {
    this.#pool = new Pool(baseUrl, { connections, keepAliveTimeout: 60_000, pipelining: 1 })
  }

  async call<T>(method: 'GET' | 'POST' | 'PUT', path: string, options: { token?: string; body?: unknown; timeoutMs?: number } = {}): Promise<{ status: number; json: T }> {
    const headers: Record<string, string> = { 'content-type': 'application/json' }
    if (options.token) headers.authorization = `Bearer ${options.token}`
    const res = await this.#pool.request({
      method,
      path,
      headers,
      ...(options.body !== undefined && { body: JSON.stringify(options.body) }),
      headersTimeout: options.timeoutMs ?? 60_000,
      bodyTimeout: options.timeoutMs ?? 60_000,
    })
    const json = (await res.body.json()) as T
    return { status: res.statusCode, json }
  }

  async ok<T>(method: 'GET' | 'POST' | 'PUT', path: string, options: { token?: string; body?: unknown; timeoutMs?: number } = {}): Promise<T> {
    const { status, json } = await this.call<T>(method, path, options)
    if (status !== 200) throw new Error(`${method} ${path}: ${status} ${JSON.stringify(json)}`)
    return json
  }

  close(): Promise<void> {
    return this.#pool.close()
  }
}

const v3 = '/_matrix/client/v3'
const enc = encodeURIComponent

/** Registers `username` (dummy auth) and returns its session. */
export async function register(client: MatrixClient, username: string): Promise<Session> {
  const res = await client.ok<{ user_id: string; access_token: string }>('POST', `${v3}/register`, {
    body: { username, password: `pw-${username}-bench`, auth: { type: 'm.login.dummy' }, inhibit_login: false },
  })
  return { userId: res.user_id, token: res.access_token }
}

/**
 * Sets up users and rooms, runs the load for `durationS` with the sync probe alongside, and
 * returns the figures. Every user joins every room (so any sender may pick any room).
 *
 * @example
 * const result = await runLoad({ baseUrl: 'http://127.0.0.1:8008', users: 64, rooms: 32, concurrency: 64, durationS: 20, distribution: 'zipf' })
 */
export async function runLoad(options: LoadOptions): Promise<LoadRun> {
  const progress = options.progress ?? (() => {})
  const client = new MatrixClient(options.baseUrl, options.concurrency + 8)
  const run = randomUUID().slice(0, 8)
  try {
    progress(`registering ${options.users} users`)
    const users: Session[] = new Array(options.users)
    await forEachLimited(Array.from({ length: options.users }, (_, i) => i), 8, async (i) => {
      users[i] = await register(client, `load${run}_${i}`)
    })
    const owner = users[0] as Session
    progress(`creating ${options.rooms} rooms and joining every user`)
    const rooms: string[] = []
    for (let r = 0; r < options.rooms; r++) {
      const { room_id } = await client.ok<{ room_id: string }>('POST', `${v3}/createRoom`, { token: owner.token, body: { preset: 'public_chat', name: `load ${r}` } })
      rooms.push(room_id)
    }
    const joins = users.slice(1).flatMap((u) => rooms.map((room) => ({ u, room })))
    await forEachLimited(joins, 16, async ({ u, room }) => {
      await client.ok('POST', `${v3}/join/${enc(room)}`, { token: u.token, body: {} })
    })

    // The probe: its own room, a sender and a syncing reader.
    const probeSender = await register(client, `probe${run}_s`)
    const probeReader = await register(client, `probe${run}_r`)
    const { room_id: probeRoom } = await client.ok<{ room_id: string }>('POST', `${v3}/createRoom`, { token: probeSender.token, body: { preset: 'public_chat' } })
    await client.ok('POST', `${v3}/join/${enc(probeRoom)}`, { token: probeReader.token, body: {} })

    const pick = roomPicker(options.rooms, options.distribution, options.hotShare ?? 0.27)
    const sendMs: number[] = []
    const hotMs: number[] = []
    let hotSends = 0
    let errors = 0
    let stop = false
    let stoppedAt = Number.POSITIVE_INFINITY
    const warmupS = options.warmupS ?? 0
    // `started`: where the counted load begins.
    const started = performance.now() + warmupS * 1000
    const deadline = started + options.durationS * 1000
    let measuring = warmupS <= 0
    const measureStart = () => {
      measuring = true
      wakeups = loadedWakeups
      options.onMeasureStart?.()
    }
    if (warmupS > 0) progress(`  warm-up: ${warmupS} s of load, not counted`)

    // Sync probe. A sync may carry a probe before its sender has read the 200 (the api worker
    // answers only after its own tracker covers the event): such a probe counts as woken at 0 ms.
    const acked = new Map<string, number>()
    const seenEarly = new Set<string>()
    const loadedWakeups: number[] = []
    const idleWakeups: number[] = []
    let wakeups = warmupS > 0 ? ([] as number[]) : loadedWakeups
    const probeSync = (async () => {
      const initial = await client.ok<{ next_batch: string }>('GET', `${v3}/sync?timeout=0&filter=${enc(JSON.stringify({ room: { timeline: { limit: 1 } } }))}`, { token: probeReader.token })
      let since = initial.next_batch
      while (!stop || acked.size > 0) {
        const res = await client.call<{ next_batch: string; rooms?: { join?: Record<string, { timeline?: { events?: { event_id: string }[] } }> } }>(
          'GET',
          `${v3}/sync?timeout=5000&since=${enc(since)}`,
          { token: probeReader.token, timeoutMs: 30_000 },
        )
        const now = performance.now()
        if (res.status !== 200) continue
        since = res.json.next_batch
        for (const event of res.json.rooms?.join?.[probeRoom]?.timeline?.events ?? []) {
          const at = acked.get(event.event_id)
          if (at !== undefined) {
            wakeups.push(Math.max(0, now - at))
            acked.delete(event.event_id)
          } else {
            seenEarly.add(event.event_id)
          }
        }
        if (stop && performance.now() > stoppedAt + 10_000) break
      }
    })()
    let probesSent = 0
    const sendProbes = async (until: number) => {
      while (performance.now() < until) {
        await new Promise((r) => setTimeout(r, options.probeIntervalMs ?? 200))
        const { event_id } = await client.ok<{ event_id: string }>('PUT', `${v3}/rooms/${enc(probeRoom)}/send/m.room.message/${probeTxnPrefix}${randomUUID()}`, {
          token: probeSender.token,
          body: { msgtype: 'm.text', body: 'probe' },
        })
        if (seenEarly.delete(event_id)) wakeups.push(0)
        else acked.set(event_id, performance.now())
        probesSent++
      }
    }
    const probeSend = sendProbes(deadline)

    if (measuring) options.onMeasureStart?.()
    else setTimeout(measureStart, warmupS * 1000).unref()
    let lastReport = started
    const senders = Array.from({ length: options.concurrency }, async (_, c) => {
      const user = users[c % users.length] as Session
      let n = 0
      while (performance.now() < deadline) {
        const room = pick()
        const t0 = performance.now()
        const res = await client
          .call('PUT', `${v3}/rooms/${enc(rooms[room] as string)}/send/m.room.message/${c}-${n++}-${run}`, { token: user.token, body: { msgtype: 'm.text', body: `load ${n}` } })
          .catch(() => ({ status: 0 }))
        const ms = performance.now() - t0
        if (res.status !== 200) {
          errors++
          continue
        }
        if (!measuring || t0 < started) continue
        sendMs.push(ms)
        if (room === 0) {
          hotSends++
          hotMs.push(ms)
        }
        if (c === 0 && performance.now() - Math.max(lastReport, started) > 5000) {
          lastReport = performance.now()
          progress(`  ${Math.round((lastReport - started) / 1000)}/${options.durationS} s: ${sendMs.length} events, ${errors} errors`)
        }
      }
    })
    await Promise.all([...senders, probeSend])
    const wallS = (performance.now() - started) / 1000
    options.onLoadEnd?.()
    const idleS = options.idleS ?? 4
    if (idleS > 0) {
      // The loaded probes arrive (or count as lost below), then the probe runs alone.
      const settled = performance.now() + 10_000
      while (acked.size > 0 && performance.now() < settled) await new Promise((r) => setTimeout(r, 20))
      wakeups = idleWakeups
      progress(`  idle: the sync probe alone for ${idleS} s`)
      await sendProbes(performance.now() + idleS * 1000)
    }
    stop = true
    stoppedAt = performance.now()
    // Probes get up to 10 s to arrive; the ones that do not are lost.
    await Promise.race([probeSync, new Promise((r) => setTimeout(r, 10_000))])
    const probesLost = acked.size
    acked.clear()
    await probeSync.catch(() => {})

    return {
      events: sendMs.length,
      errors,
      eventsPerS: Math.round(sendMs.length / wallS),
      sendMs: summarize(sendMs),
      hotRoomSendMs: summarize(hotMs),
      hotRoomShare: sendMs.length === 0 ? 0 : Math.round((hotSends / sendMs.length) * 1000) / 1000,
      syncWakeupMs: summarize(loadedWakeups),
      idleSyncWakeupMs: summarize(idleWakeups),
      probesSent,
      probesLost,
      wallS: Math.round(wallS * 10) / 10,
      samples: { sendMs, hotRoomSendMs: hotMs, syncWakeupMs: loadedWakeups, idleSyncWakeupMs: idleWakeups },
    }
  } finally {
    await client.close()
  }
}
