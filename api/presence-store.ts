/**
 * Presence, kept in process memory (not in Postgres, not shared between api workers): enough for
 * clients that set and read their own status at start-up. A user never seen is `offline`.
 */

export type PresenceState = 'online' | 'offline' | 'unavailable'

export interface PresenceStatus {
  readonly presence: PresenceState
  readonly status_msg?: string
  readonly last_active_ago?: number
  readonly currently_active?: boolean
}

export interface PresenceStore {
  get(userId: string): PresenceStatus
  set(userId: string, presence: PresenceState, statusMsg?: string): void
}

/**
 * @example
 * const presence = createPresenceStore()
 * presence.set('@alice:example.org', 'online', 'at lunch')
 * presence.get('@alice:example.org') // { presence: 'online', status_msg: 'at lunch', last_active_ago: 0, currently_active: true }
 */
export function createPresenceStore(clock: () => number = Date.now): PresenceStore {
  const states = new Map<string, { presence: PresenceState; statusMsg?: string; at: number }>()
  return {
    get(userId) {
      const state = states.get(userId)
      if (!state) return { presence: 'offline' }
      return {
        presence: state.presence,
        ...(state.statusMsg !== undefined && { status_msg: state.statusMsg }),
        last_active_ago: Math.max(0, clock() - state.at),
        currently_active: state.presence === 'online',
      }
    },
    set(userId, presence, statusMsg) {
      states.set(userId, { presence, ...(statusMsg !== undefined && { statusMsg }), at: clock() })
    },
  }
}
