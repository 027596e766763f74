import type { FastifyPluginAsync } from 'fastify'
import { getProfile, setProfile, type Profile } from '../../storage/profiles.js'
import { clientRoute } from '../client-route.js'
import { forbidden, notFound } from '../errors.js'
import { requireUser } from '../require-user.js'

/**
 * `GET /profile/{userId}`, `GET|PUT /profile/{userId}/displayname`,
 * `GET|PUT /profile/{userId}/avatar_url`. Reading needs no token (as Synapse's default); a user
 * without a profile (unknown, or of another server: no federation) is 404 `M_NOT_FOUND`. Only the
 * user may change their own profile. A changed display name is not copied into room membership
 * events (that belongs to the rooms API).
 */

export const maxDisplayNameLength = 256
export const maxAvatarUrlLength = 1000

const fields = {
  displayname: { type: ['string', 'null'], maxLength: maxDisplayNameLength },
  avatar_url: { type: ['string', 'null'], maxLength: maxAvatarUrlLength },
} as const

const userIdParam = { type: 'string', minLength: 1, maxLength: 255 } as const

export const profileRoutes: FastifyPluginAsync = async (app) => {
  const { db } = app.myelin

  async function profileOf(userId: string): Promise<Profile> {
    const profile = await getProfile(db, userId)
    if (!profile) throw notFound('Profile was not found')
    return profile
  }

  function withoutNulls(profile: Partial<Profile>): Record<string, string> {
    return Object.fromEntries(Object.entries(profile).filter((entry): entry is [string, string] => typeof entry[1] === 'string'))
  }

  clientRoute<{ Params: { userId: string } }>(app, {
    method: 'GET',
    path: '/profile/:userId',
    versions: ['v3', 'r0', 'api/v1'],
    schema: { params: { type: 'object', required: ['userId'], properties: { userId: userIdParam } } },
    handler: async (request) => withoutNulls(await profileOf(request.params.userId)),
  })

  for (const field of ['displayname', 'avatar_url'] as const) {
    const params = { type: 'object', required: ['userId'], properties: { userId: userIdParam } } as const

    clientRoute<{ Params: { userId: string } }>(app, {
      method: 'GET',
      path: `/profile/:userId/${field}`,
      versions: ['v3', 'r0', 'api/v1'],
      schema: { params },
      handler: async (request) => withoutNulls({ [field]: (await profileOf(request.params.userId))[field] }),
    })

    clientRoute<{ Params: { userId: string }; Body: Partial<Record<typeof field, string | null>> }>(app, {
      method: 'PUT',
      path: `/profile/:userId/${field}`,
      versions: ['v3', 'r0', 'api/v1'],
      schema: { params, body: { type: 'object', required: [field], properties: { [field]: fields[field] } } },
      handler: async (request) => {
        const { userId } = await requireUser(request)
        if (request.params.userId !== userId) throw forbidden('Cannot change the profile of another user')
        await setProfile(db, userId, { [field]: request.body[field] ?? null })
        return {}
      },
    })
  }
}
