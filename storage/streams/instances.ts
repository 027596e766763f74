import type { Kysely } from 'kysely'
import type { Database } from '../schema.js'

/**
 * The stable small integer of writer `name` (table `instances`), used in vector-clock stream
 * tokens (`m<min>~<id>.<pos>`). Creates it on first use; IDs are never changed or reused.
 * Selects before inserting, so a known writer costs no identity value (Synapse reference 2.2);
 * two processes registering the same name at once get the same ID.
 *
 * @example
 * await ensureInstanceId(db, 'persister1') // 1
 * await ensureInstanceId(db, 'persister1') // 1 again
 */
export async function ensureInstanceId(db: Kysely<Database>, name: string): Promise<number> {
  const existing = await selectInstanceId(db, name)
  if (existing !== undefined) return existing
  const inserted = await db
    .insertInto('instances')
    .values({ instance_name: name })
    .onConflict((oc) => oc.column('instance_name').doNothing())
    .returning('instance_id')
    .executeTakeFirst()
  if (inserted) return inserted.instance_id
  // Lost a race with another process inserting the same name: its row is committed now.
  const raced = await selectInstanceId(db, name)
  if (raced === undefined) throw new Error(`instance ${JSON.stringify(name)} vanished while being registered`)
  return raced
}

/**
 * Every registered writer name and its ID.
 *
 * @example
 * await loadInstanceIds(db) // Map { 'persister1' => 1, 'persister2' => 2 }
 */
export async function loadInstanceIds(db: Kysely<Database>): Promise<Map<string, number>> {
  const rows = await db.selectFrom('instances').select(['instance_name', 'instance_id']).execute()
  return new Map(rows.map((row) => [row.instance_name, row.instance_id]))
}

async function selectInstanceId(db: Kysely<Database>, name: string): Promise<number | undefined> {
  const row = await db
    .selectFrom('instances')
    .select('instance_id')
    .where('instance_name', '=', name)
    .executeTakeFirst()
  return row?.instance_id
}
