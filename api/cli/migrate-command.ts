import { Command } from 'commander'
import { loadConfig, postgresUrlPattern } from '../../storage/config.js'
import { createDatabase } from '../../storage/database.js'
import { defaultMigrationsDir, migrateUp, schemaStatus, type MigrationProgress } from '../../storage/migrations.js'
import { collect } from './config-command.js'
import { UsageError } from './usage-error.js'

interface MigrateFlags {
  database?: string
  config?: string[]
  migrations: string
}

/**
 * The database URL: `--database`, else `MYELIN_DATABASE_URL`, else the config files'
 * `database.url` (checked by the config schema).
 *
 * @throws UsageError (exit 2) when there is none, or it is not a postgres:// URL.
 */
async function databaseUrl(flags: MigrateFlags): Promise<string> {
  const given = (url: string, source: string) => {
    if (!postgresUrlPattern.test(url)) throw new UsageError(`${source} must be a postgres:// URL`)
    return url
  }
  if (flags.database) return given(flags.database, '--database')
  if (process.env.MYELIN_DATABASE_URL) return given(process.env.MYELIN_DATABASE_URL, 'MYELIN_DATABASE_URL')
  if (flags.config?.length) return (await loadConfig(flags.config)).database.url
  throw new UsageError('no database: pass --database URL, --config FILE or set MYELIN_DATABASE_URL')
}

/** Progress lines on stderr: one per migration, with its duration. */
const progressLines: MigrationProgress = (event) => {
  if (event.kind === 'waiting-for-lock') process.stderr.write('waiting for another `myelin migrate up` to finish…\n')
  else if (event.kind === 'applying') process.stderr.write(`[${event.index}/${event.total}] applying ${event.name}…\n`)
  else process.stderr.write(`[${event.index}/${event.total}] applied ${event.name} in ${event.ms} ms\n`)
}

async function withDatabase<T>(flags: MigrateFlags, fn: (db: ReturnType<typeof createDatabase>['db']) => Promise<T>): Promise<T> {
  const handle = createDatabase({ url: await databaseUrl(flags), poolSize: 2, applicationName: 'myelin-migrate' })
  try {
    await handle.checkConnection()
    return await fn(handle.db)
  } finally {
    await handle.close()
  }
}

/**
 * `myelin migrate up|status|verify`: applies pending migrations (safe from several processes at
 * once), lists applied and pending ones, or reports migrations edited after they were applied
 * (exit 1).
 */
export function migrateCommand(): Command {
  const migrate = new Command('migrate').description('Apply and inspect the database schema migrations.')
  const common = (cmd: Command) =>
    cmd
      .option('--database <url>', 'postgres:// URL (default: MYELIN_DATABASE_URL, then --config)')
      .option('-c, --config <file>', 'take database.url from these config files; repeatable', collect)
      .option('--migrations <dir>', 'folder of NNNN-name.sql files', defaultMigrationsDir)

  common(migrate.command('up').description('Apply every pending migration.')).action(async (flags: MigrateFlags) => {
    const { applied } = await withDatabase(flags, (db) => migrateUp(db, { dir: flags.migrations, onProgress: progressLines }))
    process.stdout.write(applied.length === 0 ? 'schema up to date: nothing to apply\n' : `applied ${applied.length} migration(s): ${applied.join(', ')}\n`)
  })

  common(migrate.command('status').description('List applied and pending migrations.')).action(async (flags: MigrateFlags) => {
    const status = await withDatabase(flags, (db) => schemaStatus(db, { dir: flags.migrations }))
    for (const entry of status.entries) {
      const when = entry.appliedAt ? ` ${entry.appliedAt.toISOString()}` : ''
      const drift = entry.drift ? ` (${entry.drift})` : ''
      process.stdout.write(`${entry.state.padEnd(7)} ${entry.name}${when}${drift}\n`)
    }
    process.stdout.write(`${status.entries.length - status.pending.length - status.unknown.length} applied, ${status.pending.length} pending\n`)
  })

  common(migrate.command('verify').description('Fail when an applied migration was edited since.')).action(async (flags: MigrateFlags) => {
    const status = await withDatabase(flags, (db) => schemaStatus(db, { dir: flags.migrations }))
    const edited = status.entries.filter((e) => e.drift === 'edited')
    for (const entry of edited) process.stderr.write(`edited after it was applied: ${entry.name}\n`)
    for (const name of status.unknown) process.stderr.write(`applied but unknown to this Myelin (newer code migrated it): ${name}\n`)
    if (edited.length > 0) {
      process.exitCode = 1
      return
    }
    process.stdout.write(`verified ${status.entries.length - status.pending.length} applied migration(s): checksums match\n`)
  })
  return migrate
}
