import type { FastifyPluginAsync } from 'fastify'
import type { RoomServices } from '../room-services.js'
import { adminHistoryRoutes } from './admin-history.js'
import { adminMediaRoutes } from './admin-media.js'
import { adminRoomRoutes } from './admin-rooms.js'
import { adminUserRoutes } from './admin-users.js'

/**
 * Synapse's admin API for accounts and rooms (the subset operators' tools use most), server admins
 * only (`users.admin`; 403 `M_FORBIDDEN` for anyone else). The account routes are in
 * admin-users.ts, the room routes in admin-rooms.ts, the media routes in admin-media.ts, what they
 * share in admin-common.ts.
 *
 * - `GET /_synapse/admin/v1/server_version`;
 * - `GET /_synapse/admin/v2/users` (`from`, `limit` (default 100, at most 1,000), `name`,
 *   `deactivated` (default false: not listed), `admins`, `order_by`, `dir`) → `{users, total,
 *   next_token?}`;
 * - `GET /_synapse/admin/v2/users/{userId}`; `PUT` creates (201) or changes (200) a local
 *   account: `password` (with `logout_devices`, default true), `displayname`, `avatar_url`,
 *   `admin`, `deactivated` (true closes the account as `/account/deactivate` does; false
 *   reactivates it and needs a `password`);
 * - `GET|PUT /_synapse/admin/v1/users/{userId}/admin` (`{admin}`; not to demote oneself);
 * - `POST|DELETE /_synapse/admin/v1/users/{userId}/shadow_ban`: the user's sends, invites and
 *   typing are answered and dropped;
 * - `GET|POST|DELETE /_synapse/admin/v1/users/{userId}/override_ratelimit`
 *   (`{messages_per_second, burst_count}`, integers, default 0; 0 and 0: no limit; `{}` when the
 *   user has the configured `rc_message`);
 * - whois, `GET /_matrix/client/v3/admin/whois/{userId}` (the spec's) and
 *   `GET /_synapse/admin/v1/whois/{userId}`: admins, or the user about themselves;
 * - `GET /_synapse/admin/v1/users/{userId}/joined_rooms`; `GET /_synapse/admin/v2/users/{userId}/devices`,
 *   `DELETE …/devices/{deviceId}` (the device and its tokens);
 * - `GET|DELETE /_synapse/admin/v1/users/{userId}/media`;
 * - media (admin-media.ts): `GET|DELETE …/v1/media/{serverName}/{mediaId}`,
 *   quarantine and unquarantine a file, a room's files or a user's (no longer served), protect
 *   and unprotect a file, delete files uploaded before a date (`…/v1/media/delete?before_ts=`);
 * - `POST /_synapse/admin/v1/deactivate/{userId}` (`erase`);
 * - `POST /_synapse/admin/v1/reset_password/{userId}` (`new_password`, `logout_devices`);
 * - `GET /_synapse/admin/v1/rooms` (`from`, `limit`, `order_by`, `dir`, `search_term`) →
 *   `{rooms, offset, total_rooms, next_batch?, prev_batch?}`;
 * - `GET /_synapse/admin/v1/rooms/{roomId}`, `…/members`, `…/state`;
 * - `/_synapse/admin/v1/registration_tokens`: list (`valid`), `POST …/new` (`token` or `length`,
 *   `uses_allowed`, `expiry_time`), `GET|PUT|DELETE …/{token}`;
 * - `POST /_synapse/admin/v1/rooms/{roomId}/make_room_admin` (`user_id`, default the requester):
 *   the joined member with the most power gives the user the same level, and invites them into a
 *   room that is not public;
 * - `GET|PUT /_synapse/admin/v1/rooms/{roomId}/block` (`{block}`): a blocked room takes no local
 *   joins, knocks or invites;
 * - `DELETE /_synapse/admin/v1/rooms/{roomId}` (answered when done) and `DELETE
 *   /_synapse/admin/v2/rooms/{roomId}` (answered at once with a `delete_id`; `GET
 *   …/v2/rooms/{roomId}/delete_status` and `…/v2/rooms/delete_status/{deleteId}` tell how far it
 *   got, from any api worker, which also resumes one whose process stopped) (`block`, `purge` (default true), `force_purge`,
 *   `new_room_user_id`, `room_name`, `message`): every local member leaves (the server acting
 *   for them); with `new_room_user_id` they are joined to a new room of that user's, with the
 *   message, and the aliases move there, otherwise they are deleted; then the room is purged
 *   (storage/admin.ts `purgeRoom`) unless someone could not be removed (409, unless
 *   `force_purge`). Answers `{kicked_users, failed_to_kick_users, local_aliases, new_room_id}`;
 * - history (admin-history.ts): `POST /_synapse/admin/v1/purge_history/{roomId}[/{eventId}]`
 *   (`delete_local_events`, `purge_up_to_event_id`, `purge_up_to_ts`) deletes a room's events
 *   before a point, keeping its state, in the background → `{purge_id}`;
 *   `GET …/v1/purge_history_status/{purgeId}` → `{status}`.
 *
 * The routes are under `/_synapse/`, which the router and the nginx configuration send to the
 * api workers; an operator who does not want them reachable from outside blocks that prefix at
 * their edge (as Synapse's documentation advises).
 */

/**
 * Every admin route, over an api process's room services (deactivation and room deletion send
 * leave events).
 *
 * @example
 * const app = await buildApp(ctx, { plugins: [adminRoutes(services)] })
 * await app.inject({ method: 'GET', url: '/_synapse/admin/v2/users', headers: { authorization: `Bearer ${adminToken}` } })
 */
export function adminRoutes(services: RoomServices): FastifyPluginAsync {
  return async (app) => {
    await adminUserRoutes(services)(app, {})
    await adminRoomRoutes(services)(app, {})
    await adminMediaRoutes(app, {})
    await adminHistoryRoutes(app, {})
  }
}
