import type { FastifyInstance, FastifySchema, RouteGenericInterface, RouteOptions } from 'fastify'
import type { IncomingMessage, Server, ServerResponse } from 'node:http'

/** The client-server API versions every route answers under (the seed's `(r0|v3)`). */
export const clientVersions = ['v3', 'r0'] as const

export type ClientRouteOptions<T extends RouteGenericInterface> = Omit<
  RouteOptions<Server, IncomingMessage, ServerResponse, T>,
  'url' | 'path' | 'schema'
> & {
  /** Path below `/_matrix/client/<version>`, e.g. `/account/whoami`. */
  readonly path: string
  /** Request schema; required, so no route accepts unchecked input. Use `{}` for none. */
  readonly schema: FastifySchema
  /** Versions to register under (default `clientVersions`; e.g. `['v1']` for v1-only routes). */
  readonly versions?: readonly string[]
}

/**
 * Registers one client-server API route under every version prefix (`/_matrix/client/v3/…` and
 * `/_matrix/client/r0/…`), so `r0` clients work unchanged.
 *
 * @example
 * clientRoute<{ Params: { userId: string } }>(app, {
 *   method: 'GET',
 *   path: '/profile/:userId',
 *   schema: { params: { type: 'object', properties: { userId: { type: 'string' } } } },
 *   handler: async (request) => getProfile(request.server.myelin.db, request.params.userId),
 * })
 */
export function clientRoute<T extends RouteGenericInterface = RouteGenericInterface>(app: FastifyInstance, options: ClientRouteOptions<T>): void {
  const { path, versions = clientVersions, ...route } = options
  for (const version of versions) {
    app.route<T>({ ...route, url: `/_matrix/client/${version}${path}` })
  }
}

/**
 * A `preValidation` hook for routes whose body is optional (`DELETE /devices/{id}` without
 * `auth`): an empty body validates as `{}` instead of answering M_NOT_JSON.
 *
 * @example
 * clientRoute(app, { method: 'DELETE', path: '/devices/:deviceId', preValidation: emptyBodyAsObject, schema, handler })
 */
export async function emptyBodyAsObject(request: { body: unknown }): Promise<void> {
  if (request.body === undefined) request.body = {}
}
