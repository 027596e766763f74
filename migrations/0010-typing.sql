-- Typing notifications (PUT /rooms/{roomId}/typing/{userId}): one row per room and user who
-- ever typed there; expires_ts 0 once they stopped (or their timeout ran out and the
-- background sweep noticed). Rows share the rooms' ephemeral stream with receipts: their
-- stream_id comes from receipts_stream_seq under the same lock (storage/ephemeral-stream.ts),
-- and changes only when the room's list of typing users changes.

CREATE TABLE typing (
  room_id text NOT NULL,
  user_id text NOT NULL,
  expires_ts bigint NOT NULL,
  stream_id bigint NOT NULL,
  PRIMARY KEY (room_id, user_id)
);
COMMENT ON TABLE typing IS 'Who types in which room until when (0: stopped); stream_id orders the changes for sync.';
CREATE INDEX typing_stream_id ON typing (stream_id);
CREATE INDEX typing_expiring ON typing (expires_ts) WHERE expires_ts > 0;
