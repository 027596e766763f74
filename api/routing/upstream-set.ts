import { createShardMap, type ShardMap } from '../../persisters/shard-map.js'
import { StorageError } from '../../storage/errors.js'
import type { Route } from './path-table.js'

/** One process's client listener, as the router reaches it. */
export interface Upstream {
  /** The process name (`worker_name`); unique within a set. */
  readonly name: string
  readonly host: string
  readonly port: number
}

export interface RouterUpstreams {
  /** Api workers (or the main process in a monolith): serve every client endpoint. */
  readonly api: readonly Upstream[]
  /** Event persisters by writer name (the names the shard map returns). */
  readonly persisters: ReadonlyMap<string, Upstream>
}

export interface UpstreamSetOptions {
  readonly shardMap: ShardMap
  /** How long an upstream that refused a connection goes to the end of every plan. */
  readonly downMs: number
  readonly clock: () => number
}

/**
 * The router's view of its upstreams at one moment: which to try, in which order, for a route.
 *
 * Order of a plan: the preferred upstream first (the room's owner persister for `room-write`, the
 * user's api worker for `sync`), then the api workers round robin; upstreams marked down move to
 * the end (they are still tried: a mark may be stale, and trying beats failing outright).
 * The user's api worker is chosen by rendezvous hashing over api worker names, so adding or
 * removing one moves only the users it wins or owned, and a restart on a new port moves none.
 */
export interface UpstreamSet {
  readonly upstreams: RouterUpstreams
  /** Upstreams to try for one request, best first, each once; empty when there are none. */
  plan(route: Route, userKey: string | undefined): Upstream[]
  /** Records that `upstream` refused a connection; it stays at the end of plans for `downMs`. */
  markDown(upstream: Upstream): void
}

/**
 * @throws StorageError `ES_CONFIG_INVALID` when two api workers share a name.
 * @example
 * const set = createUpstreamSet(
 *   { api: [{ name: 'api1', host: '127.0.0.1', port: 8081 }], persisters: new Map() },
 *   { shardMap, downMs: 1000, clock: Date.now },
 * )
 * set.plan({ kind: 'any' }, undefined) // [{ name: 'api1', … }]
 */
export function createUpstreamSet(upstreams: RouterUpstreams, options: UpstreamSetOptions): UpstreamSet {
  const api = Object.freeze([...upstreams.api])
  const persisters: ReadonlyMap<string, Upstream> = new Map(upstreams.persisters)
  const byName = new Map(api.map((u) => [u.name, u]))
  if (byName.size !== api.length) throw new StorageError('ES_CONFIG_INVALID', 'two api upstreams share a name')
  // The api-worker picker reuses the shard map's frozen rendezvous hash (stable across processes).
  const userPicker = api.length > 0 ? createShardMap({ writers: api.map((u) => u.name) }) : undefined
  const downUntil = new Map<string, number>()
  let nextIndex = 0

  const key = (u: Upstream): string => `${u.name}@${u.host}:${u.port}`
  const isDown = (u: Upstream): boolean => {
    const until = downUntil.get(key(u))
    if (until === undefined) return false
    if (until > options.clock()) return true
    downUntil.delete(key(u))
    return false
  }

  function rotation(): Upstream[] {
    if (api.length === 0) return []
    const start = nextIndex % api.length
    nextIndex = (nextIndex + 1) % api.length
    return [...api.slice(start), ...api.slice(0, start)]
  }

  // Owners are pure functions of the set (hashes per writer): remembered, since every request asks.
  const roomOwner = remembered((roomId: string) => options.shardMap.ownerOf(roomId))
  const userWorker = userPicker && remembered((userKey: string) => userPicker.ownerOf(userKey))

  function plan(route: Route, userKey: string | undefined): Upstream[] {
    let preferred: Upstream | undefined
    if (route.kind === 'room-write') preferred = persisters.get(roomOwner(route.roomId))
    else if (route.kind === 'sync' && userKey !== undefined && userWorker) preferred = byName.get(userWorker(userKey))
    const ordered = preferred ? [preferred, ...rotation().filter((u) => u !== preferred)] : rotation()
    if (downUntil.size === 0) return ordered
    const healthy = ordered.filter((u) => !isDown(u))
    return healthy.length === ordered.length ? ordered : [...healthy, ...ordered.filter(isDown)]
  }

  function markDown(upstream: Upstream): void {
    downUntil.set(key(upstream), options.clock() + options.downMs)
  }

  return Object.freeze({ upstreams: Object.freeze({ api, persisters }), plan, markDown })
}

/** `fn` with its answers for up to 10,000 recent arguments kept (all forgotten when full). */
function remembered(fn: (key: string) => string): (key: string) => string {
  const answers = new Map<string, string>()
  return (key) => {
    let answer = answers.get(key)
    if (answer === undefined) {
      if (answers.size >= 10_000) answers.clear()
      answer = fn(key)
      answers.set(key, answer)
    }
    return answer
  }
}

/**
 * The router's upstreams for a set of supervised processes: api workers (or, without any, the
 * `main` process) and persisters; processes without a port (restarting) are left out. Call it
 * from the supervisor's `onReady` to follow restarts.
 *
 * @example
 * createSupervisor({ children, log, onReady: () => router.setUpstreams(upstreamsFromProcesses(supervisor.processes())) })
 */
export function upstreamsFromProcesses(
  processes: readonly { readonly name: string; readonly role: string; readonly port: number | null }[],
  host = '127.0.0.1',
): RouterUpstreams {
  const live = processes.filter((p): p is typeof p & { port: number } => p.port !== null)
  const api = live.filter((p) => p.role === 'api')
  const clients = api.length > 0 || processes.some((p) => p.role === 'api') ? api : live.filter((p) => p.role === 'main')
  return {
    api: clients.map((p) => ({ name: p.name, host, port: p.port })),
    persisters: new Map(live.filter((p) => p.role === 'persister').map((p) => [p.name, { name: p.name, host, port: p.port }])),
  }
}
