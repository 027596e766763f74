import type { FastifyPluginAsync } from 'fastify'
import {
  claimKeys,
  clientKeyCounts,
  crossSigningKeysChange,
  deviceListUpdates,
  queryKeys,
  uploadCrossSigningKeys,
  uploadKeys,
  uploadSignatures,
  type CrossSigningKeyType,
  type KeyClaim,
} from '../../storage/e2e-keys.js'
import { joinedRooms } from '../../storage/room-reads.js'
import { parseSyncToken } from '../../storage/sync.js'
import { clientRoute } from '../client-route.js'
import { invalidParam } from '../errors.js'
import { requireUser } from '../require-user.js'
import { isUserId, serverNameOf } from '../room-ids.js'
import { authDictSchema, requirePasswordAuth, type AuthDict } from '../user-interactive-auth.js'

/**
 * End-to-end encryption keys (client-server API "End-to-End Encryption"), over
 * storage/e2e-keys.ts; any api process serves them:
 * - `POST /keys/upload`: the device's identity keys, one-time keys and fallback keys; answers
 *   the one-time key counts;
 * - `POST /keys/query`: devices' identity keys and users' cross-signing keys;
 * - `POST /keys/claim`: one one-time key (or the fallback key) per device named;
 * - `GET /keys/changes?from&to`: users whose devices changed between two sync tokens;
 * - `POST /keys/device_signing/upload`: cross-signing keys (user-interactive auth with the
 *   password when they replace stored ones);
 * - `POST /keys/signatures/upload`: signatures on devices and master keys.
 * Users of other servers cannot be asked (no federation): they are listed in `failures`.
 */

type Json = Record<string, unknown>

/** Most users in one query or claim, and most devices per user (Synapse answers any number; a bound keeps one request small). */
const maxUsers = 1000
const maxKeysPerUpload = 1000

const userMap = (values: Json) => ({ type: 'object', maxProperties: maxUsers, propertyNames: { type: 'string', maxLength: 255 }, additionalProperties: values }) as const
const keyObject = { type: 'object', maxProperties: maxKeysPerUpload, additionalProperties: { anyOf: [{ type: 'object' }, { type: 'string' }] } } as const
const deviceKeysSchema = {
  type: 'object',
  required: ['user_id', 'device_id', 'algorithms', 'keys', 'signatures'],
  properties: {
    user_id: { type: 'string' },
    device_id: { type: 'string' },
    algorithms: { type: 'array', maxItems: 100, items: { type: 'string' } },
    keys: { type: 'object', additionalProperties: { type: 'string' } },
    signatures: { type: 'object', additionalProperties: { type: 'object', additionalProperties: { type: 'string' } } },
  },
} as const
const crossSigningKeySchema = {
  type: 'object',
  required: ['user_id', 'usage', 'keys'],
  properties: {
    user_id: { type: 'string' },
    usage: { type: 'array', maxItems: 10, items: { type: 'string' } },
    keys: { type: 'object', additionalProperties: { type: 'string' } },
    signatures: { type: 'object', additionalProperties: { type: 'object', additionalProperties: { type: 'string' } } },
  },
} as const

interface UploadBody {
  device_keys?: Json
  one_time_keys?: Record<string, unknown>
  fallback_keys?: Record<string, unknown>
  'org.matrix.msc2732.fallback_keys'?: Record<string, unknown>
}

export const keyRoutes: FastifyPluginAsync = async (app) => {
  const runtime = app.myelin
  const { db, config } = runtime
  const noFederation = { errcode: 'M_FORBIDDEN', error: 'Federation is not supported' }
  /** The local users among `userIds`, the others (no federation), and the others' servers as `failures`. */
  const localOnly = (userIds: readonly string[]) => {
    const local: string[] = []
    const remote: string[] = []
    for (const userId of userIds) {
      if (!isUserId(userId)) throw invalidParam(`${JSON.stringify(userId.slice(0, 300))} is not a user ID`)
      if (serverNameOf(userId) === config.server_name) local.push(userId)
      else remote.push(userId)
    }
    const failures: Record<string, Json> = Object.fromEntries(remote.map((userId) => [serverNameOf(userId), noFederation]))
    return { local, remote, failures }
  }

  clientRoute<{ Body: UploadBody }>(app, {
    method: 'POST',
    path: '/keys/upload',
    schema: {
      body: {
        type: 'object',
        properties: { device_keys: deviceKeysSchema, one_time_keys: keyObject, fallback_keys: keyObject, 'org.matrix.msc2732.fallback_keys': keyObject },
      },
    },
    handler: async (request) => {
      const { userId, deviceId } = await requireUser(request)
      const body = request.body
      const fallbackKeys = body.fallback_keys ?? body['org.matrix.msc2732.fallback_keys']
      const counts = await uploadKeys(db, {
        userId,
        deviceId,
        ...(body.device_keys !== undefined && { deviceKeys: body.device_keys }),
        ...(body.one_time_keys !== undefined && { oneTimeKeys: body.one_time_keys }),
        ...(fallbackKeys !== undefined && { fallbackKeys }),
      })
      return { one_time_key_counts: clientKeyCounts(counts) }
    },
  })

  clientRoute<{ Body: { device_keys: Record<string, string[]>; timeout?: number } }>(app, {
    method: 'POST',
    path: '/keys/query',
    schema: {
      body: {
        type: 'object',
        required: ['device_keys'],
        properties: { device_keys: userMap({ type: 'array', maxItems: 1000, items: { type: 'string', maxLength: 255 } }), timeout: { type: 'integer' } },
      },
    },
    handler: async (request) => {
      const { userId } = await requireUser(request)
      const { local, failures } = localOnly(Object.keys(request.body.device_keys))
      const wanted = Object.fromEntries(local.map((u) => [u, request.body.device_keys[u] ?? []]))
      return { ...(await queryKeys(db, userId, wanted)), failures }
    },
  })

  clientRoute<{ Body: { one_time_keys: Record<string, Record<string, string>>; timeout?: number } }>(app, {
    method: 'POST',
    path: '/keys/claim',
    schema: {
      body: {
        type: 'object',
        required: ['one_time_keys'],
        properties: {
          one_time_keys: userMap({ type: 'object', maxProperties: 1000, additionalProperties: { type: 'string', minLength: 1, maxLength: 255 } }),
          timeout: { type: 'integer' },
        },
      },
    },
    handler: async (request) => {
      await requireUser(request)
      const { local, failures } = localOnly(Object.keys(request.body.one_time_keys))
      const claims: KeyClaim[] = local.flatMap((userId) => Object.entries(request.body.one_time_keys[userId] ?? {}).map(([deviceId, algorithm]) => ({ userId, deviceId, algorithm })))
      if (claims.length > maxKeysPerUpload) throw invalidParam(`At most ${maxKeysPerUpload} keys per claim`)
      return { one_time_keys: await claimKeys(db, claims), failures }
    },
  })

  clientRoute<{ Querystring: { from: string; to: string } }>(app, {
    method: 'GET',
    path: '/keys/changes',
    schema: {
      querystring: {
        type: 'object',
        required: ['from', 'to'],
        properties: { from: { type: 'string', maxLength: 4000 }, to: { type: 'string', maxLength: 4000 } },
      },
    },
    handler: async (request) => {
      const { userId } = await requireUser(request)
      const from = parseSyncToken(request.query.from)
      const to = parseSyncToken(request.query.to)
      // A token of an earlier version has no device lists part: every key change up to `to`.
      return deviceListUpdates(db, userId, {
        keysAfter: from.deviceLists ?? 0n,
        keysUpTo: to.deviceLists ?? from.deviceLists ?? 0n,
        roomsSince: from.room.stream,
        rooms: await joinedRooms(db, userId),
      })
    },
  })

  clientRoute<{ Body: { master_key?: Json; self_signing_key?: Json; user_signing_key?: Json; auth?: AuthDict } }>(app, {
    method: 'POST',
    path: '/keys/device_signing/upload',
    versions: ['v3', 'r0', 'unstable'],
    schema: {
      body: {
        type: 'object',
        properties: { master_key: crossSigningKeySchema, self_signing_key: crossSigningKeySchema, user_signing_key: crossSigningKeySchema, auth: authDictSchema },
      },
    },
    handler: async (request) => {
      const requester = await requireUser(request)
      const body = request.body
      const keys: Partial<Record<CrossSigningKeyType, Json>> = {
        ...(body.master_key && { master: body.master_key }),
        ...(body.self_signing_key && { self_signing: body.self_signing_key }),
        ...(body.user_signing_key && { user_signing: body.user_signing_key }),
      }
      // The first upload, or the same keys again, needs no password (MSC3967, as Synapse).
      if ((await crossSigningKeysChange(db, requester.userId, keys)) === 'replace') await requirePasswordAuth(runtime, requester, body.auth)
      await uploadCrossSigningKeys(db, requester.userId, keys)
      return {}
    },
  })

  clientRoute<{ Body: Record<string, Record<string, Json>> }>(app, {
    method: 'POST',
    path: '/keys/signatures/upload',
    versions: ['v3', 'r0', 'unstable'],
    schema: { body: userMap({ type: 'object', maxProperties: 1000, additionalProperties: { type: 'object' } }) },
    handler: async (request) => {
      const { userId } = await requireUser(request)
      const { local, remote } = localOnly(Object.keys(request.body))
      const signed = Object.fromEntries(local.map((u) => [u, request.body[u] ?? {}]))
      const failures = await uploadSignatures(db, userId, signed)
      for (const other of remote) failures[other] = Object.fromEntries(Object.keys(request.body[other] ?? {}).map((keyId) => [keyId, noFederation]))
      return { failures }
    },
  })
}
