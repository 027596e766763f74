import { sql, type Kysely } from 'kysely'
import type { Database } from './schema.js'

/**
 * The user directory (client-server API "User directory"), as Synapse serves it by default
 * (`search_all_users: false`): a searcher finds the users who share a room with them and the
 * members of public rooms (join rule `public`), by user ID or display name.
 *
 * Matching: every word of the search term must occur in the user ID or the display name,
 * case-insensitively (`%` and `_` are literal). Users whose display name or localpart starts
 * with the first word come first, then by user ID. The searcher is found like anyone else.
 *
 * Cost: one statement reading the current memberships of the searcher's rooms and of the
 * public rooms (`current_state_members` and the primary key of `current_state_events`).
 */

/** One search result. */
export interface DirectoryUser {
  readonly user_id: string
  readonly display_name?: string
  readonly avatar_url?: string
}

/** Longest search term accepted, in characters, and most results per search. */
export const maxSearchTermLength = 256
export const maxSearchLimit = 50

/**
 * Users `searcher` may find whose user ID or display name contains every word of `term`.
 *
 * @returns at most `limit` users, and whether there were more.
 * @example
 * await searchUserDirectory(db, '@alice:hs', 'bo', 10) // { results: [{ user_id: '@bob:hs', display_name: 'Bob' }], limited: false }
 */
export async function searchUserDirectory(db: Kysely<Database>, searcher: string, term: string, limit: number): Promise<{ results: DirectoryUser[]; limited: boolean }> {
  const words = term.trim().toLowerCase().split(/\s+/).filter((word) => word !== '')
  if (words.length === 0) return { results: [], limited: false }
  const patterns = words.map((word) => `%${likeEscape(word)}%`)
  const prefix = `${likeEscape(words[0]!)}%`
  const { rows } = await sql<{ user_id: string; displayname: string | null; avatar_url: string | null }>`
    WITH visible_rooms AS (
      SELECT room_id FROM current_state_events
      WHERE type = 'm.room.member' AND state_key = ${searcher} AND membership = 'join'
      UNION
      SELECT c.room_id FROM current_state_events c JOIN event_json j ON j.event_id = c.event_id
      WHERE c.type = 'm.room.join_rules' AND c.state_key = '' AND (j.json::jsonb -> 'content' ->> 'join_rule') = 'public'
    ), visible_users AS (
      SELECT DISTINCT m.state_key AS user_id FROM current_state_events m JOIN visible_rooms v ON v.room_id = m.room_id
      WHERE m.type = 'm.room.member' AND m.membership = 'join'
    )
    SELECT u.user_id, p.displayname, p.avatar_url
    FROM visible_users u LEFT JOIN profiles p ON p.user_id = u.user_id
    WHERE (SELECT bool_and(lower(u.user_id) LIKE w OR lower(coalesce(p.displayname, '')) LIKE w) FROM unnest(${patterns}::text[]) AS w)
    ORDER BY (lower(coalesce(p.displayname, '')) LIKE ${prefix} OR lower(u.user_id) LIKE ${`@${prefix}`}) DESC, u.user_id
    LIMIT ${limit + 1}`.execute(db)
  const results = rows.slice(0, limit).map((row) => ({
    user_id: row.user_id,
    ...(row.displayname !== null && { display_name: row.displayname }),
    ...(row.avatar_url !== null && { avatar_url: row.avatar_url }),
  }))
  return { results, limited: rows.length > limit }
}

/** `text` with LIKE's wildcards and escape character taken literally. */
function likeEscape(text: string): string {
  return text.replace(/[\\%_]/g, (c) => `\\${c}`)
}
