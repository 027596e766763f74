import { createAccessToken, createUser, deleteDeviceTokens, ensureDevice, generateDeviceId } from '../storage/accounts.js'
import { hashPassword } from '../storage/password-hash.js'
import { consumeRegistrationToken } from '../storage/registration-tokens.js'
import { setProfile } from '../storage/profiles.js'
import type { ApiRuntime } from './context.js'
import { MatrixError } from './errors.js'
import { InteractiveAuthRequired, registrationTokenStage } from './user-interactive-auth.js'
import { userIdOf } from './user-ids.js'

/**
 * Creating accounts and login sessions (a device plus an access token), shared by `/register`,
 * the shared-secret admin registration and `/login`.
 */

/** What registration and login answer. */
export interface SessionResponse {
  user_id: string
  access_token?: string
  device_id?: string
  home_server: string
}

/**
 * Registers `@localpart:server_name` (the caller checked the localpart) with a profile whose
 * display name is the localpart, and, unless `inhibitLogin`, a first device and token; all in one
 * transaction. 400 `M_USER_IN_USE` when the ID is taken.
 *
 * @example
 * await createAccount(runtime, { localpart: 'alice', password: 's3cret' })
 * // { user_id: '@alice:example.org', access_token: 'syt_…', device_id: 'ABCDEFGHIJ', home_server: 'example.org' }
 */
export async function createAccount(
  runtime: ApiRuntime,
  account: {
    localpart: string
    password: string
    deviceId?: string
    deviceDisplayName?: string
    displayName?: string
    inhibitLogin?: boolean
    admin?: boolean
    /** Used once in the account's transaction (storage/registration-tokens.ts); an invalid one is the 401 of its stage. */
    registrationToken?: { token: string; session: string }
  },
): Promise<SessionResponse> {
  const serverName = runtime.config.server_name
  const userId = userIdOf(account.localpart, serverName)
  const passwordHash = await hashPassword(account.password)
  const nowMs = runtime.clock()
  return runtime.db.transaction().execute(async (trx) => {
    if ((await createUser(trx, { userId, passwordHash, nowMs, admin: account.admin === true })) === 'exists') {
      throw new MatrixError(400, 'M_USER_IN_USE', 'User ID already taken')
    }
    const grant = account.registrationToken
    if (grant !== undefined && !(await consumeRegistrationToken(trx, grant.token, nowMs))) {
      throw new InteractiveAuthRequired([registrationTokenStage], grant.session, { errcode: 'M_UNAUTHORIZED', error: 'Invalid registration token' })
    }
    await setProfile(trx, userId, { displayname: account.displayName ?? account.localpart })
    if (account.inhibitLogin) return { user_id: userId, home_server: serverName }
    const deviceId = account.deviceId ?? generateDeviceId()
    await ensureDevice(trx, { userId, deviceId, displayName: account.deviceDisplayName ?? null, nowMs })
    const { token } = await createAccessToken(trx, { userId, deviceId, nowMs })
    return { user_id: userId, access_token: token, device_id: deviceId, home_server: serverName }
  })
}

/**
 * A new login session for an existing user: the device (created, or re-used when `deviceId`
 * names one of the user's devices, whose previous tokens are then revoked, as the spec says)
 * and a fresh token.
 *
 * @example
 * await startSession(runtime, { userId: '@alice:example.org', deviceId: 'PHONE' })
 */
export async function startSession(
  runtime: ApiRuntime,
  session: { userId: string; deviceId?: string; deviceDisplayName?: string },
): Promise<SessionResponse> {
  const deviceId = session.deviceId ?? generateDeviceId()
  const nowMs = runtime.clock()
  const response = await runtime.db.transaction().execute(async (trx) => {
    await deleteDeviceTokens(trx, session.userId, deviceId)
    await ensureDevice(trx, { userId: session.userId, deviceId, displayName: session.deviceDisplayName ?? null, nowMs })
    const { token } = await createAccessToken(trx, { userId: session.userId, deviceId, nowMs })
    return { user_id: session.userId, access_token: token, device_id: deviceId, home_server: runtime.config.server_name }
  })
  runtime.auth.forget({ userId: session.userId, deviceIds: [deviceId] })
  return response
}
