import { randomAlphanumeric } from '../storage/access-token.js'
import { getUser, type Requester } from '../storage/accounts.js'
import { verifyAgainstDummy, verifyPassword } from '../storage/password-hash.js'
import type { ApiRuntime } from './context.js'
import { limitExceeded, MatrixError } from './errors.js'
import { loginUserId } from './user-ids.js'

/**
 * User-interactive authentication (client-server API "User-interactive authentication API"),
 * reduced to single-stage flows: `m.login.dummy` or `m.login.registration_token` (registration)
 * and `m.login.password` (sensitive account operations). A single stage needs no server-side session state, so a
 * session ID is only echoed: any api worker can complete a flow another one started.
 */

/** The `auth` object of a request body. */
export interface AuthDict {
  readonly type?: string
  readonly session?: string
  readonly identifier?: { readonly type?: string; readonly user?: string }
  readonly user?: string
  readonly password?: string
  /** `m.login.registration_token`'s token. */
  readonly token?: string
}

/** JSON schema of `auth` (types only; what is required depends on the stage). */
export const authDictSchema = {
  type: 'object',
  properties: {
    type: { type: 'string' },
    session: { type: 'string', maxLength: 255 },
    identifier: { type: 'object', properties: { type: { type: 'string' }, user: { type: 'string', maxLength: 512 } } },
    user: { type: 'string', maxLength: 512 },
    password: { type: 'string', maxLength: 512 },
    token: { type: 'string', maxLength: 64 },
  },
} as const

/**
 * 401 with the flows a client must complete (no errcode on the first round; `errcode`/`error`
 * after a failed attempt, as the spec shows).
 */
export class InteractiveAuthRequired extends MatrixError {
  private readonly failed: boolean

  constructor(
    readonly stages: readonly string[],
    readonly session: string,
    failure?: { errcode: string; error: string },
  ) {
    super(401, failure?.errcode ?? 'M_UNAUTHORIZED', failure?.error ?? 'Additional authentication is required')
    this.failed = failure !== undefined
  }

  override body(): Record<string, unknown> {
    const flows = this.stages.map((stage) => ({ stages: [stage] }))
    const base = { flows, params: {}, session: this.session, completed: [] }
    return this.failed ? { errcode: this.errcode, error: this.message, ...base } : base
  }
}

/** A session ID for a new flow. */
export function newSessionId(): string {
  return randomAlphanumeric(24)
}

/**
 * The registration stage: `m.login.registration_token` when registration requires a token (its
 * `token` returned, to be used in the transaction that creates the account), else
 * `m.login.dummy`; or throws the 401 that asks for it.
 *
 * @example
 * const token = requireRegistrationAuth(body.auth, config.registration.requires_token)
 */
export function requireRegistrationAuth(auth: AuthDict | undefined, requiresToken: boolean): { token?: string; session: string } {
  if (!requiresToken) {
    requireDummyAuth(auth)
    return { session: auth?.session ?? newSessionId() }
  }
  const session = auth?.session ?? newSessionId()
  if (auth === undefined) throw new InteractiveAuthRequired([registrationTokenStage], session)
  if (auth.type !== registrationTokenStage) throw new MatrixError(400, 'M_UNRECOGNIZED', `Unsupported authentication type ${JSON.stringify(auth.type ?? null)}`)
  if (typeof auth.token !== 'string' || auth.token === '') throw new MatrixError(400, 'M_MISSING_PARAM', 'Missing registration token')
  return { token: auth.token, session }
}

export const registrationTokenStage = 'm.login.registration_token'

/**
 * Completes `m.login.dummy` or throws the 401 that asks for it.
 *
 * @example
 * requireDummyAuth(body.auth) // at the start of registration
 */
export function requireDummyAuth(auth: AuthDict | undefined): void {
  if (auth === undefined) throw new InteractiveAuthRequired(['m.login.dummy'], newSessionId())
  if (auth.type !== 'm.login.dummy') throw new MatrixError(400, 'M_UNRECOGNIZED', `Unsupported authentication type ${JSON.stringify(auth.type ?? null)}`)
}

/**
 * Checks that `auth` proves `requester` knows the account password (`m.login.password`), or
 * throws: the 401 asking for it, 401 `M_FORBIDDEN` on a wrong password (still with the flows),
 * 403 when it names another user, 429 after too many failures.
 *
 * @example
 * await requirePasswordAuth(request.server.myelin, requester, request.body.auth)
 */
export async function requirePasswordAuth(runtime: ApiRuntime, requester: Requester, auth: AuthDict | undefined): Promise<void> {
  const session = auth?.session ?? newSessionId()
  if (auth === undefined) throw new InteractiveAuthRequired(['m.login.password'], session)
  if (auth.type !== 'm.login.password') throw new MatrixError(400, 'M_UNRECOGNIZED', `Unsupported authentication type ${JSON.stringify(auth.type ?? null)}`)
  const named = auth.identifier?.user ?? auth.user
  if (named !== undefined && loginUserId(named, runtime.config.server_name) !== requester.userId) {
    throw new MatrixError(403, 'M_FORBIDDEN', 'Authentication must be for the requesting user')
  }
  if (typeof auth.password !== 'string') throw new MatrixError(400, 'M_MISSING_PARAM', 'Missing password')
  const wait = runtime.failedLogins.retryAfterMs(requester.userId)
  if (wait > 0) throw limitExceeded(wait)
  const user = await getUser(runtime.db, requester.userId)
  const ok = user?.passwordHash ? await verifyPassword(auth.password, user.passwordHash) : await verifyAgainstDummy(auth.password)
  if (!ok) {
    runtime.failedLogins.record(requester.userId)
    throw new InteractiveAuthRequired(['m.login.password'], session, { errcode: 'M_FORBIDDEN', error: 'Invalid password' })
  }
}
