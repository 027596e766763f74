import { sql, type Kysely } from 'kysely'
import type { Database } from './schema.js'

/**
 * Event relations (client-server API "Forming relationships between events"): threads
 * (`m.thread`), edits (`m.replace`), references (`m.reference`), annotations (`m.annotation`)
 * and any other `rel_type`. The persister records each event's relation in `event_relations`
 * (migration 0015) in the event's own transaction; reads leave out the relations of redacted
 * events.
 */

/** An event's relation, from its content. */
export interface Relation {
  readonly relatesToId: string
  readonly relationType: string
  readonly aggregationKey: string | null
}

/**
 * The relation a non-state event's content declares (`m.relates_to` with string `rel_type` and
 * `event_id`), or undefined.
 *
 * @example
 * relationOf({ body: 'hi', 'm.relates_to': { rel_type: 'm.thread', event_id: '$root' } }, undefined)
 * // { relatesToId: '$root', relationType: 'm.thread', aggregationKey: null }
 */
export function relationOf(content: Readonly<Record<string, unknown>>, stateKey: string | undefined | null): Relation | undefined {
  if (stateKey !== undefined && stateKey !== null) return undefined
  const relatesTo = content['m.relates_to']
  if (typeof relatesTo !== 'object' || relatesTo === null || Array.isArray(relatesTo)) return undefined
  const { rel_type: relationType, event_id: relatesToId, key } = relatesTo as Record<string, unknown>
  if (typeof relationType !== 'string' || typeof relatesToId !== 'string') return undefined
  return { relatesToId, relationType, aggregationKey: typeof key === 'string' ? key : null }
}

/** The `event_relations` row of an event with `relation`. */
export function relationRow(event: { eventId: string; roomId: string; sender: string; type: string; streamOrdering: bigint }, relation: Relation) {
  return {
    event_id: event.eventId,
    relates_to_id: relation.relatesToId,
    relation_type: relation.relationType,
    aggregation_key: relation.aggregationKey,
    room_id: event.roomId,
    sender: event.sender,
    type: event.type,
    stream_ordering: event.streamOrdering,
  }
}
