import { createHash } from 'node:crypto'
import { cpus, release, totalmem } from 'node:os'
import { Redis } from 'ioredis'
import pg from 'pg'

/** The machine and servers a benchmark run measured; printed once, results reference its `id`. */
export interface MachineInfo {
  readonly kind: 'machine'
  /** Short hash of the fields below; every result line carries it as `machine`. */
  readonly id: string
  readonly cpuModel: string
  readonly cores: number
  readonly memoryGiB: number
  readonly kernel: string
  readonly node: string
  readonly postgres: string
  /** PostgreSQL durability settings as the server reports them. */
  readonly durability: {
    readonly fsync: string
    readonly synchronous_commit: string
    readonly full_page_writes: string
    readonly wal_sync_method: string
  }
  readonly sharedBuffers: string
  readonly redis: string
  readonly startedAt: string
}

/**
 * Describes this machine, the PostgreSQL server of `adminUrl` and the Redis of `redisUrl`.
 *
 * @example
 * const machine = await describeMachine(ctx.adminUrl, ctx.redisUrl)
 * machine.durability.fsync // 'on' under `make bench`
 */
export async function describeMachine(adminUrl: string, redisUrl: string): Promise<MachineInfo> {
  const client = new pg.Client({ connectionString: adminUrl })
  await client.connect()
  const setting = async (name: string): Promise<string> => {
    const { rows } = await client.query<{ setting: string }>('SELECT current_setting($1) AS setting', [name])
    return rows[0]?.setting ?? ''
  }
  let postgres: string
  let durability: MachineInfo['durability']
  let sharedBuffers: string
  try {
    postgres = await setting('server_version')
    durability = {
      fsync: await setting('fsync'),
      synchronous_commit: await setting('synchronous_commit'),
      full_page_writes: await setting('full_page_writes'),
      wal_sync_method: await setting('wal_sync_method'),
    }
    sharedBuffers = await setting('shared_buffers')
  } finally {
    await client.end()
  }
  const redis = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 })
  let redisVersion = 'unknown'
  try {
    await redis.connect()
    redisVersion = /redis_version:(\S+)/.exec(await redis.info('server'))?.[1] ?? 'unknown'
  } finally {
    redis.disconnect()
  }
  const cpuList = cpus()
  const fields = {
    cpuModel: cpuList[0]?.model.trim() ?? 'unknown',
    cores: cpuList.length,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    kernel: release(),
    node: process.version,
    postgres,
    durability,
    sharedBuffers,
    redis: redisVersion,
  }
  const id = createHash('sha256').update(JSON.stringify(fields)).digest('hex').slice(0, 12)
  return { kind: 'machine', id, ...fields, startedAt: new Date().toISOString() }
}
