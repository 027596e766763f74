import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import type { FastifyPluginAsync } from 'fastify'
import { createAccount } from '../account-sessions.js'
import { forbidden, MatrixError } from '../errors.js'
import { checkLocalpart } from '../user-ids.js'
import { maxPasswordLength } from './register.js'

/**
 * Shared-secret registration, Synapse's admin API (`/_synapse/admin/v1/register`), so
 * `register_new_matrix_user` and scripts written for Synapse work unchanged. Open only when
 * `registration.shared_secret` is set; works even with `registration.enabled: false`.
 *
 * `GET` answers a nonce; `POST {nonce, username, password, admin?, displayname?, mac}` registers,
 * where `mac` is the hex HMAC-SHA1 (key: the shared secret) of
 * `nonce NUL username NUL password NUL ("admin" | "notadmin")`. `admin: true` makes a server admin
 * (`users.admin`), who may read the content reports (routes/reports.ts).
 *
 * Nonces are stateless (a timestamp and random part, HMAC-signed with the secret), so any api
 * worker accepts a nonce another one issued. They expire after `nonceLifetimeMs`; replaying one
 * within that time cannot register anything new (the MAC binds the username, which is then taken).
 */

export const nonceLifetimeMs = 60_000

interface AdminRegisterBody {
  nonce: string
  username: string
  password: string
  admin?: boolean
  displayname?: string
  mac: string
}

function sign(secret: string, data: string): string {
  return createHmac('sha256', secret).update(`myelin-register-nonce\0${data}`).digest('hex').slice(0, 32)
}

/** A nonce valid for `nonceLifetimeMs` from `nowMs`. */
export function issueNonce(secret: string, nowMs: number): string {
  const data = `${nowMs.toString(36)}.${randomBytes(12).toString('hex')}`
  return `${data}.${sign(secret, data)}`
}

function nonceIsValid(secret: string, nonce: string, nowMs: number): boolean {
  const cut = nonce.lastIndexOf('.')
  if (cut === -1) return false
  const data = nonce.slice(0, cut)
  const given = Buffer.from(nonce.slice(cut + 1))
  const expected = Buffer.from(sign(secret, data))
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return false
  const issued = parseInt(data.split('.', 1)[0] ?? '', 36)
  return Number.isFinite(issued) && nowMs - issued >= 0 && nowMs - issued <= nonceLifetimeMs
}

/**
 * The MAC a client computes (exported for tests and tools).
 *
 * @example
 * registrationMac(secret, { nonce, username: 'alice', password: 'pw', admin: false })
 */
export function registrationMac(secret: string, request: { nonce: string; username: string; password: string; admin?: boolean }): string {
  return createHmac('sha1', secret)
    .update([request.nonce, request.username, request.password, request.admin ? 'admin' : 'notadmin'].join('\0'))
    .digest('hex')
}

export const adminRegisterRoutes: FastifyPluginAsync = async (app) => {
  const secret = app.myelin.config.registration.shared_secret
  const path = '/_synapse/admin/v1/register'
  const disabled = () => new MatrixError(400, 'M_UNKNOWN', 'Shared secret registration is not enabled')

  app.get(path, { schema: {} }, async () => {
    if (secret === undefined) throw disabled()
    return { nonce: issueNonce(secret, app.myelin.clock()) }
  })

  app.post<{ Body: AdminRegisterBody }>(
    path,
    {
      schema: {
        body: {
          type: 'object',
          required: ['nonce', 'username', 'password', 'mac'],
          properties: {
            nonce: { type: 'string', maxLength: 200 },
            username: { type: 'string', maxLength: 255 },
            password: { type: 'string', maxLength: maxPasswordLength },
            admin: { type: 'boolean' },
            displayname: { type: 'string', maxLength: 256 },
            mac: { type: 'string', maxLength: 200 },
          },
        },
      },
    },
    async (request) => {
      if (secret === undefined) throw disabled()
      const body = request.body
      if (!nonceIsValid(secret, body.nonce, app.myelin.clock())) throw new MatrixError(400, 'M_UNKNOWN', 'Unrecognised or expired nonce')
      const expected = Buffer.from(registrationMac(secret, body))
      const given = Buffer.from(body.mac.toLowerCase())
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw forbidden('HMAC incorrect')
      checkLocalpart(body.username, app.myelin.config.server_name)
      return createAccount(app.myelin, {
        localpart: body.username,
        password: body.password,
        admin: body.admin === true,
        ...(body.displayname !== undefined && { displayName: body.displayname }),
      })
    },
  )
}
