/**
 * The key that keeps one user's sync requests on one api worker, taken from the access token
 * without any database lookup (the seed's nginx `map $http_authorization $mxid_localpart`).
 *
 * Myelin's access tokens have the shape `syt_<base64url localpart>_<random>_<check>` where
 * `<random>` and `<check>` are alphanumeric; the base64url localpart may itself contain `_`, so
 * the key is everything between `syt_` and the last two `_`-separated segments. Every device of a
 * user therefore yields the same key. A token of another shape is its own key (sticky per
 * device, still stable). The key is never logged: part of it is the token.
 */

const sytToken = /^syt_(.+)_[A-Za-z0-9]+_[A-Za-z0-9]+$/

/**
 * @example
 * userKeyFromToken('syt_YWxpY2U_aBcDeFgHiJ_0a1B2c') // 'YWxpY2U'
 * userKeyFromToken('opaque-token') // 'opaque-token'
 */
export function userKeyFromToken(token: string): string {
  return sytToken.exec(token)?.[1] ?? token
}

/**
 * The user key of a request: the `Authorization: Bearer` token wins over the `access_token`
 * query parameter (as in the seed); `undefined` when the request carries neither.
 *
 * @example
 * userKeyFromRequest('Bearer syt_YWxpY2U_aBcDeFgHiJ_0a1B2c', '/_matrix/client/v3/sync') // 'YWxpY2U'
 * userKeyFromRequest(undefined, '/_matrix/client/v3/sync?access_token=syt_Ym9i_x_y') // 'Ym9i'
 */
export function userKeyFromRequest(authorization: string | undefined, path: string): string | undefined {
  if (authorization !== undefined) {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization)
    if (match?.[1] !== undefined) return userKeyFromToken(match[1])
  }
  const query = path.indexOf('?')
  if (query === -1) return undefined
  const token = new URLSearchParams(path.slice(query + 1)).get('access_token')
  return token === null || token === '' ? undefined : userKeyFromToken(token)
}
