-- The server's message retention rule (configuration `retention`), written by the background
-- process at its start: reads hide the non-state events a room's lifetime has expired until the
-- retention purge deletes them (storage/room-reads.ts `loadVisibility`). No row: retention is
-- off and nothing is hidden.

CREATE TABLE retention_settings (
  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  default_max_lifetime_ms int8,
  allowed_lifetime_min_ms int8,
  allowed_lifetime_max_ms int8
);
COMMENT ON TABLE retention_settings IS 'Message retention rule in force (one row when retention is on).';
