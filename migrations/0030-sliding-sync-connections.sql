-- Sliding sync (MSC4186) connections saved by an api worker that shuts down, so that their
-- clients go on from their `pos` on whichever worker serves them next instead of starting over.
-- A worker takes (deletes) a connection's row the first time one of its positions is asked
-- for; rows no worker took are deleted once older than a connection's idle time.

CREATE TABLE sliding_sync_connections (
  conn_key text PRIMARY KEY,
  -- The connection's positions and what its client holds at each, as JSON (api/routes/sliding-sync.ts).
  state text NOT NULL,
  touched_ts int8 NOT NULL
);
COMMENT ON TABLE sliding_sync_connections IS 'Sliding sync connections an api worker saved when it shut down, until a worker takes them.';
CREATE INDEX sliding_sync_connections_touched ON sliding_sync_connections (touched_ts);
