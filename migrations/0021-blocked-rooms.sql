-- Rooms a server admin blocked (Synapse's admin API: `PUT /_synapse/admin/v1/rooms/{roomId}/block`,
-- or `block: true` when deleting a room): local users may no longer join, knock on or be invited
-- to them. A room ID may be blocked before the room exists here (or after it was purged).

CREATE TABLE blocked_rooms (
  room_id text PRIMARY KEY,
  -- The admin who blocked it.
  user_id text NOT NULL,
  blocked_ts bigint NOT NULL
);
COMMENT ON TABLE blocked_rooms IS 'Rooms blocked by a server admin: no local joins, knocks or invites.';
