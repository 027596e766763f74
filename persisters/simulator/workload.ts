/**
 * Workload generation for the sharding simulator: a seeded PRNG, room activity distributions
 * (uniform, Zipf over room ranks, a per-room event-count trace) and a bursty arrival process.
 *
 * Determinism: every random draw comes from one `Rng` seeded by the caller, and every
 * computation here is a fixed sequence of IEEE-754 operations, so a seed reproduces a run exactly
 * on the same Node.js version.
 */

/** Uniform random numbers in [0, 1) from xoshiro128** (Blackman and Vigna, 2018). */
export type Rng = () => number

/**
 * xoshiro128** (the reference `next()` transcribed to 32-bit JS arithmetic); its four state words
 * come from a Weyl sequence (step 0x9e3779b9) mixed by MurmurHash3's fmix32, so nearby seeds give
 * unrelated streams. The output is a 32-bit integer divided by 2^32.
 *
 * @example
 * const rng = createRng(42)
 * rng() // 0 <= x < 1, the same sequence for seed 42 in every process
 */
export function createRng(seed: number): Rng {
  let state = seed >>> 0
  const seedWord = (): number => {
    state = (state + 0x9e3779b9) | 0
    let z = state
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b)
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35)
    return (z ^ (z >>> 16)) >>> 0
  }
  let a = seedWord()
  let b = seedWord()
  let c = seedWord()
  let d = seedWord()
  if ((a | b | c | d) === 0) a = 1
  return () => {
    const result = Math.imul(rotl(Math.imul(b, 5), 7), 9) >>> 0
    const t = b << 9
    c ^= a
    d ^= b
    b ^= c
    a ^= d
    c ^= t
    d = rotl(d, 11)
    return result / 4294967296
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k))
}

/** An exponential draw with the given rate (per the caller's time unit); rate MUST be > 0. */
export function exponential(rng: Rng, rate: number): number {
  return -Math.log(1 - rng()) / rate
}

/** Room name used for simulated rooms: rank order, `!room0:sim` the hottest under Zipf. */
export function simulatedRoomId(index: number): string {
  return `!room${index}:sim`
}

/**
 * Which rooms exist and how active each one is.
 * Invariants: `roomIds` are unique; `weights[i]` >= 0 is room i's relative activity, and the
 * weights sum to 1; rooms are in rank order (non-increasing weight, index 0 the hottest).
 */
export interface RoomActivity {
  readonly roomIds: readonly string[]
  readonly weights: Float64Array
  /** One line for humans, e.g. `zipf s=1 over 10,000 rooms`. */
  readonly description: string
}

export function uniformActivity(rooms: number): RoomActivity {
  requireRoomCount(rooms)
  const weights = new Float64Array(rooms).fill(1 / rooms)
  return { roomIds: simulatedRoomIds(rooms), weights, description: `uniform over ${rooms.toLocaleString('en-US')} rooms` }
}

/** Zipf over ranks: room i (0-based) has weight proportional to 1 / (i + 1)^exponent. */
export function zipfActivity(rooms: number, exponent: number): RoomActivity {
  requireRoomCount(rooms)
  if (!(exponent >= 0) || !Number.isFinite(exponent)) throw new RangeError(`Zipf exponent must be >= 0, got ${exponent}`)
  const weights = new Float64Array(rooms)
  for (let i = 0; i < rooms; i++) weights[i] = 1 / Math.pow(i + 1, exponent)
  normalize(weights)
  return {
    roomIds: simulatedRoomIds(rooms),
    weights,
    description: `zipf s=${exponent} over ${rooms.toLocaleString('en-US')} rooms`,
  }
}

/** Analytic share of the rank-0 room under Zipf: 1 / H(rooms, exponent). */
export function zipfTopShare(rooms: number, exponent: number): number {
  let harmonic = 0
  for (let i = rooms; i >= 1; i--) harmonic += 1 / Math.pow(i, exponent)
  return 1 / harmonic
}

/** One row of a per-room event-count trace. */
export interface TraceRow {
  readonly roomId: string
  readonly events: number
}

/**
 * Activity proportional to a trace's per-room event counts. Rooms keep their real IDs (so the
 * shard map places them as it would in production) and are sorted hottest first, ties in trace
 * order. Rooms with zero events exist (they count for moved rooms) but receive no traffic.
 */
export function traceActivity(rows: readonly TraceRow[], source: string): RoomActivity {
  if (rows.length === 0) throw new RangeError(`trace ${source} has no rooms`)
  const seen = new Set<string>()
  let total = 0
  for (const row of rows) {
    if (seen.has(row.roomId)) throw new RangeError(`trace ${source} lists room ${row.roomId} twice`)
    if (!Number.isSafeInteger(row.events) || row.events < 0) {
      throw new RangeError(`trace ${source}: room ${row.roomId} has invalid event count ${row.events}`)
    }
    seen.add(row.roomId)
    total += row.events
  }
  if (total === 0) throw new RangeError(`trace ${source} has no events`)
  const order = rows.map((_, i) => i).sort((a, b) => (rows[b] as TraceRow).events - (rows[a] as TraceRow).events || a - b)
  const weights = new Float64Array(rows.length)
  order.forEach((index, rank) => (weights[rank] = (rows[index] as TraceRow).events / total))
  return {
    roomIds: order.map((index) => (rows[index] as TraceRow).roomId),
    weights,
    description: `trace ${source}: ${rows.length.toLocaleString('en-US')} rooms, ${total.toLocaleString('en-US')} events`,
  }
}

/**
 * Parses a trace CSV: a header line `room_id,events`, then one `ROOM_ID,COUNT` line per room.
 * Blank lines and surrounding spaces are ignored; the count is the text after the last comma.
 * Throws a RangeError naming the line for anything else.
 */
export function parseTraceCsv(text: string, source: string): TraceRow[] {
  const rows: TraceRow[] = []
  let header = false
  const lines = text.split(/\r?\n/)
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] as string).trim()
    if (line === '') continue
    if (!header) {
      if (line.replace(/\s+/g, '').toLowerCase() !== 'room_id,events') {
        throw new RangeError(`${source}:${i + 1}: expected the header "room_id,events", got ${JSON.stringify(line)}`)
      }
      header = true
      continue
    }
    const comma = line.lastIndexOf(',')
    const roomId = comma < 0 ? '' : line.slice(0, comma).trim()
    const count = comma < 0 ? '' : line.slice(comma + 1).trim()
    if (roomId === '' || !/^\d+$/.test(count) || !Number.isSafeInteger(Number(count))) {
      throw new RangeError(`${source}:${i + 1}: expected ROOM_ID,EVENT_COUNT, got ${JSON.stringify(line)}`)
    }
    rows.push({ roomId, events: Number(count) })
  }
  if (!header) throw new RangeError(`${source}: empty trace (expected the header "room_id,events")`)
  return rows
}

/**
 * Draws room indices with probability `weights[i]` in O(1) per draw (Vose's alias method).
 *
 * @example
 * const pick = createRoomSampler(zipfActivity(1000, 1).weights, createRng(1))
 * pick() // 0 most often
 */
export function createRoomSampler(weights: Float64Array, rng: Rng): () => number {
  const n = weights.length
  const probability = new Float64Array(n)
  const alias = new Int32Array(n)
  const scaled = new Float64Array(n)
  const small: number[] = []
  const large: number[] = []
  let sum = 0
  for (let i = 0; i < n; i++) sum += weights[i] as number
  for (let i = 0; i < n; i++) {
    scaled[i] = ((weights[i] as number) * n) / sum
    ;((scaled[i] as number) < 1 ? small : large).push(i)
  }
  while (small.length > 0 && large.length > 0) {
    const s = small.pop() as number
    const l = large.pop() as number
    probability[s] = scaled[s] as number
    alias[s] = l
    scaled[l] = (scaled[l] as number) + (scaled[s] as number) - 1
    ;((scaled[l] as number) < 1 ? small : large).push(l)
  }
  for (const i of large) probability[i] = 1
  // Leftovers in `small` are rounding residue (scaled ≈ 1). A zero-weight room keeps probability 0.
  for (const i of small) probability[i] = (scaled[i] as number) > 0 ? 1 : 0
  return () => {
    const u = rng() * n
    const column = Math.floor(u)
    return u - column < (probability[column] as number) ? column : (alias[column] as number)
  }
}

/**
 * Arrival times of a two-state Markov-modulated Poisson process, in ms.
 *
 * The process alternates between a high state (rate `ratePerS * (1 + burstiness)`) and a low
 * state (rate `ratePerS * (1 - burstiness)`); each state lasts an exponential time with mean
 * `burstPeriodS`. Both states are equally likely over time, so the long-run rate is `ratePerS`
 * for every burstiness. Burstiness 0 is a plain Poisson process; 1 is on/off traffic at twice the
 * mean rate half of the time. Arrivals stop at `durationS`.
 */
export interface ArrivalOptions {
  readonly ratePerS: number
  readonly durationS: number
  /** In [0, 1]. */
  readonly burstiness: number
  /** Mean time in each state, > 0. */
  readonly burstPeriodS: number
}

/** Returns a function giving the next arrival time in ms, or Infinity once `durationS` is reached. */
export function createArrivals(options: ArrivalOptions, rng: Rng): () => number {
  const endMs = options.durationS * 1000
  const switchRatePerMs = 1 / (options.burstPeriodS * 1000)
  const rates = [(options.ratePerS * (1 + options.burstiness)) / 1000, (options.ratePerS * (1 - options.burstiness)) / 1000]
  let state = options.burstiness > 0 && rng() < 0.5 ? 1 : 0
  let nowMs = 0
  let switchAtMs = options.burstiness > 0 ? exponential(rng, switchRatePerMs) : Infinity
  return () => {
    for (;;) {
      if (nowMs >= endMs) return Infinity
      const rate = rates[state] as number
      const next = rate > 0 ? nowMs + exponential(rng, rate) : Infinity
      if (next < switchAtMs) {
        nowMs = next
        return nowMs < endMs ? nowMs : Infinity
      }
      // Exponential gaps are memoryless: restarting the draw at the switch is exact.
      nowMs = switchAtMs
      state = 1 - state
      switchAtMs = nowMs + exponential(rng, switchRatePerMs)
    }
  }
}

function simulatedRoomIds(rooms: number): string[] {
  return Array.from({ length: rooms }, (_, i) => simulatedRoomId(i))
}

function requireRoomCount(rooms: number): void {
  if (!Number.isSafeInteger(rooms) || rooms < 1) throw new RangeError(`room count must be a positive integer, got ${rooms}`)
}

function normalize(weights: Float64Array): void {
  let sum = 0
  for (let i = weights.length - 1; i >= 0; i--) sum += weights[i] as number
  for (let i = 0; i < weights.length; i++) weights[i] = (weights[i] as number) / sum
}
