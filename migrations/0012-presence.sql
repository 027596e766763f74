-- Presence (client-server API "Presence"), shared by every process of a deployment: one row per
-- user who was ever online. stream_id orders the changes for /sync (its own stream, from
-- presence_stream_seq under one advisory lock, storage/ordered-streams.ts) and moves only when
-- what others see changes: the state or the status message.
--
-- online_until_ts: the user counts as connected until then (a sync or a presence update
-- extends it); the background sweep sets users past it offline, and online users inactive
-- for five minutes (last_active_ts) unavailable.

CREATE SEQUENCE presence_stream_seq;
SELECT nextval('presence_stream_seq');

CREATE TABLE presence (
  user_id text PRIMARY KEY,
  state text NOT NULL CHECK (state IN ('online', 'unavailable', 'offline')),
  status_msg text,
  last_active_ts bigint NOT NULL,
  online_until_ts bigint NOT NULL,
  stream_id bigint NOT NULL
);
COMMENT ON TABLE presence IS 'Each user''s presence; stream_id orders the changes others see, for sync.';
CREATE INDEX presence_stream_id ON presence (stream_id);
CREATE INDEX presence_connected ON presence (online_until_ts) WHERE state <> 'offline';
