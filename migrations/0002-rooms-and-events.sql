-- The events path: rooms (with the ownership head row), events, the DAG, state and memberships.

CREATE TABLE rooms (
  room_id text PRIMARY KEY,
  room_version text NOT NULL,
  creator text NOT NULL,
  is_public boolean NOT NULL DEFAULT false,
  created_ts bigint NOT NULL,
  -- Head row: the writer that owns the room and the ownership epoch. A persist transaction locks
  -- this row and aborts unless (owner, epoch) is still what the writer believes (fencing).
  owner text,
  epoch bigint NOT NULL DEFAULT 0,
  -- Highest depth and stream ordering persisted for the room (both advance with every batch).
  max_depth bigint NOT NULL DEFAULT 0,
  last_stream_ordering bigint
);
COMMENT ON TABLE rooms IS
  'One row per room; also the room head: owner writer + ownership epoch for fencing, max depth and last stream ordering.';

CREATE TABLE events (
  stream_ordering bigint PRIMARY KEY,
  event_id text NOT NULL UNIQUE,
  room_id text NOT NULL REFERENCES rooms (room_id),
  type text NOT NULL,
  state_key text,
  sender text NOT NULL,
  origin_server_ts bigint NOT NULL,
  received_ts bigint NOT NULL,
  depth bigint NOT NULL,
  instance_name text NOT NULL,
  outlier boolean NOT NULL DEFAULT false,
  redacts text,
  membership text
);
COMMENT ON TABLE events IS
  'Every event, one row: stream_ordering > 0 from the events stream (live), < 0 from the backfill stream (imported history). instance_name is the writer that allocated the ID.';
-- Timeline reads by stream order (incremental sync) and topological order (/messages, initial sync).
CREATE INDEX events_room_stream ON events (room_id, stream_ordering);
CREATE INDEX events_room_topological ON events (room_id, depth, stream_ordering);
CREATE INDEX events_redacts ON events (redacts) WHERE redacts IS NOT NULL;

CREATE TABLE event_json (
  event_id text PRIMARY KEY,
  room_id text NOT NULL,
  json text NOT NULL
);
COMMENT ON TABLE event_json IS
  'The full signed PDU of each event as canonical JSON text, served without re-encoding.';

CREATE TABLE redactions (
  event_id text PRIMARY KEY,
  redacts text NOT NULL
);
COMMENT ON TABLE redactions IS 'Redaction event -> the event it redacts; reads serve the redacted form of targets.';
CREATE INDEX redactions_redacts ON redactions (redacts);

CREATE TABLE event_edges (
  event_id text NOT NULL,
  prev_event_id text NOT NULL,
  room_id text NOT NULL,
  PRIMARY KEY (event_id, prev_event_id)
);
COMMENT ON TABLE event_edges IS 'The room DAG: event_id lists prev_event_id among its prev_events.';
CREATE INDEX event_edges_prev ON event_edges (prev_event_id);

CREATE TABLE event_forward_extremities (
  room_id text NOT NULL,
  event_id text NOT NULL,
  PRIMARY KEY (room_id, event_id)
);
COMMENT ON TABLE event_forward_extremities IS
  'Per room, the events no accepted event references yet; the next local event takes (up to 10 of) them as prev_events.';

CREATE TABLE event_backward_extremities (
  room_id text NOT NULL,
  event_id text NOT NULL,
  PRIMARY KEY (room_id, event_id)
);
COMMENT ON TABLE event_backward_extremities IS
  'Per room, prev_events referenced by stored events but not stored themselves (where history could be backfilled from).';

CREATE TABLE state_events (
  event_id text PRIMARY KEY,
  room_id text NOT NULL,
  type text NOT NULL,
  state_key text NOT NULL,
  prev_state_event_id text
);
COMMENT ON TABLE state_events IS 'Every state event, with the event it replaced in current state (if any) at persist time.';

CREATE TABLE current_state_events (
  room_id text NOT NULL,
  type text NOT NULL,
  state_key text NOT NULL,
  event_id text NOT NULL,
  membership text,
  stream_ordering bigint NOT NULL,
  PRIMARY KEY (room_id, type, state_key)
);
COMMENT ON TABLE current_state_events IS
  'The room''s current state: one event per (type, state_key); membership copied for member events.';
-- "Which rooms is this user in": joined rooms, invites, sync.
CREATE INDEX current_state_members ON current_state_events (state_key, membership)
  WHERE type = 'm.room.member';

CREATE TABLE room_memberships (
  event_id text PRIMARY KEY,
  room_id text NOT NULL,
  user_id text NOT NULL,
  sender text NOT NULL,
  membership text NOT NULL,
  stream_ordering bigint NOT NULL,
  depth bigint NOT NULL
);
COMMENT ON TABLE room_memberships IS
  'Membership history (every m.room.member event), for history visibility: what a user could see and when.';
CREATE INDEX room_memberships_user_room ON room_memberships (user_id, room_id, stream_ordering);

CREATE TABLE event_txn_ids (
  room_id text NOT NULL,
  user_id text NOT NULL,
  device_id text NOT NULL,
  txn_id text NOT NULL,
  event_id text NOT NULL,
  inserted_ts bigint NOT NULL,
  PRIMARY KEY (room_id, user_id, device_id, txn_id)
);
COMMENT ON TABLE event_txn_ids IS
  'Client transaction IDs: (room, user, device, txn) -> the event it created, so a retried send returns the original event.';
CREATE INDEX event_txn_ids_inserted ON event_txn_ids (inserted_ts);
CREATE INDEX event_txn_ids_event ON event_txn_ids (event_id);

CREATE TABLE replication_requests (
  request_id text NOT NULL,
  idx integer NOT NULL,
  event_id text NOT NULL,
  inserted_ts bigint NOT NULL,
  PRIMARY KEY (request_id, idx)
);
COMMENT ON TABLE replication_requests IS
  'Replication request ID -> the events it persisted (in request order), so a retried request returns the first answer, also after a persister restart.';
CREATE INDEX replication_requests_inserted ON replication_requests (inserted_ts);

CREATE TABLE room_aliases (
  room_alias text PRIMARY KEY,
  room_id text NOT NULL REFERENCES rooms (room_id),
  creator text NOT NULL
);
COMMENT ON TABLE room_aliases IS 'Room directory aliases (#alias:server) -> room.';
CREATE INDEX room_aliases_room ON room_aliases (room_id);
