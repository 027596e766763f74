-- Room deletions started through Synapse's asynchronous admin API
-- (`DELETE /_synapse/admin/v2/rooms/{roomId}`), so that any api worker can answer their status
-- (`…/delete_status`). A deletion whose process stopped midway stays `shutting_down` or `purging`;
-- asking again finishes it.

CREATE TABLE room_deletions (
  delete_id text PRIMARY KEY,
  room_id text NOT NULL,
  -- shutting_down, purging, complete, failed
  status text NOT NULL,
  -- {kicked_users, failed_to_kick_users, local_aliases, new_room_id} once the members are out.
  shutdown_room jsonb,
  error text,
  started_ts bigint NOT NULL
);
COMMENT ON TABLE room_deletions IS 'Asynchronous room deletions (admin API v2) and how far each got.';
CREATE INDEX room_deletions_room ON room_deletions (room_id, started_ts);
