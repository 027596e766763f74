/**
 * A JSON object as events are handled here: string keys, values of any JSON type.
 *
 * @example
 * const pdu: JsonObject = { type: 'm.room.message', content: { body: 'hi' } }
 */
export type JsonObject = { [key: string]: unknown }

/**
 * Top-level keys an event keeps when redacted (room version 11).
 *
 * @example
 * redactionKeptTopLevelKeys.includes('unsigned') // false
 */
export const redactionKeptTopLevelKeys: readonly string[] = Object.freeze([
  'event_id',
  'type',
  'room_id',
  'sender',
  'state_key',
  'content',
  'hashes',
  'signatures',
  'depth',
  'prev_events',
  'auth_events',
  'origin_server_ts',
])

/**
 * `content` keys kept when redacted, by event type (room version 11). `'*'` keeps all of them;
 * types not listed keep none. `m.room.member` additionally keeps `third_party_invite.signed`
 * (see `redactEvent`).
 *
 * @example
 * redactionKeptContentKeys['m.room.history_visibility'] // ['history_visibility']
 * redactionKeptContentKeys['m.room.create'] // '*'
 */
export const redactionKeptContentKeys: Readonly<Record<string, readonly string[] | '*'>> = Object.freeze({
  'm.room.member': ['membership', 'join_authorised_via_users_server'],
  'm.room.create': '*',
  'm.room.join_rules': ['join_rule', 'allow'],
  'm.room.power_levels': [
    'ban',
    'events',
    'events_default',
    'invite',
    'kick',
    'redact',
    'state_default',
    'users',
    'users_default',
  ],
  'm.room.history_visibility': ['history_visibility'],
  'm.room.redaction': ['redacts'],
})

/**
 * The room version 11 redaction algorithm: what an event keeps once redacted, and the form that
 * reference hashes (event IDs) and event signatures cover.
 *
 * Guarantees:
 * - never mutates `event`; the result shares no objects with it (kept values are deep copies);
 * - only the keys of `redactionKeptTopLevelKeys` survive at the top level (`unsigned`, `origin`,
 *   `membership`, `prev_state` and any other key are dropped);
 * - the result always has a `content` object: the kept keys of the type's entry in
 *   `redactionKeptContentKeys`, or `{}` (also when `content` was missing or not an object);
 * - for `m.room.member`, a `third_party_invite` object is kept holding only its `signed` key
 *   (an empty object when it has none), as Synapse does;
 * - idempotent: `redactEvent(redactEvent(e))` deep-equals `redactEvent(e)`.
 *
 * @example
 * redactEvent({
 *   type: 'm.room.member', sender: '@a:x', state_key: '@a:x', origin: 'x', unsigned: { age: 1 },
 *   content: { membership: 'join', displayname: 'A' },
 * })
 * // { type: 'm.room.member', sender: '@a:x', state_key: '@a:x', content: { membership: 'join' } }
 */
export function redactEvent(event: Readonly<JsonObject>): JsonObject {
  return redactWith(event, structuredClone)
}

/**
 * What `redactEvent` keeps, without copying: the result shares its values with `event`, so it is
 * for reading only. Reference hashes and signatures are computed over it on the persist hot path,
 * where deep copies were a tenth of the persister's CPU.
 *
 * @example
 * canonicalJsonBytes(redactedView(pdu)) // the bytes an event ID hashes and a signature covers
 */
export function redactedView(event: Readonly<JsonObject>): JsonObject {
  return redactWith(event, (value) => value)
}

function redactWith(event: Readonly<JsonObject>, copy: <T>(value: T) => T): JsonObject {
  const redacted: JsonObject = {}
  for (const key of redactionKeptTopLevelKeys) {
    if (key !== 'content' && Object.hasOwn(event, key)) redacted[key] = copy(event[key])
  }
  redacted['content'] = redactContent(event['type'], event['content'], copy)
  return redacted
}

function redactContent(type: unknown, content: unknown, copy: <T>(value: T) => T): JsonObject {
  const kept: JsonObject = {}
  if (!isJsonObject(content) || typeof type !== 'string' || !Object.hasOwn(redactionKeptContentKeys, type)) {
    return kept
  }
  const allowed = redactionKeptContentKeys[type]
  for (const key of Object.keys(content)) {
    // defineProperty, not assignment: a `__proto__` key (JSON.parse makes it an own key) must stay data.
    if (allowed === '*' || allowed?.includes(key)) {
      Object.defineProperty(kept, key, { value: copy(content[key]), enumerable: true, writable: true, configurable: true })
    }
  }
  const invite = content['third_party_invite']
  if (type === 'm.room.member' && isJsonObject(invite)) {
    kept['third_party_invite'] = Object.hasOwn(invite, 'signed') ? { signed: copy(invite['signed']) } : {}
  }
  return kept
}

function isJsonObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}
