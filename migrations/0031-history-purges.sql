-- Purges of a room's old history through Synapse's admin API
-- (`POST /_synapse/admin/v1/purge_history/{roomId}`), so that any api worker answers their status
-- (`…/purge_history_status/{purgeId}`) and a purge whose process stopped resumes where it got to:
-- the events are deleted in chunks, each chunk's transaction moving the cursor on.

CREATE TABLE history_purges (
  purge_id text PRIMARY KEY,
  room_id text NOT NULL,
  -- active, complete, failed
  status text NOT NULL,
  -- Events of a lower depth are deleted (the purge point's depth: it and its peers stay).
  up_to_depth int8 NOT NULL,
  delete_local_events boolean NOT NULL,
  -- The last (depth, stream_ordering) looked at; NULL before the first chunk.
  cursor_depth int8,
  cursor_stream int8,
  deleted int8 NOT NULL DEFAULT 0,
  error text,
  started_ts int8 NOT NULL
);
COMMENT ON TABLE history_purges IS 'Purges of rooms'' old events (admin API purge_history) and how far each got.';
CREATE INDEX history_purges_unfinished ON history_purges (started_ts) WHERE status = 'active';
