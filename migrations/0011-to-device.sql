-- To-device messages (PUT /sendToDevice/{eventType}/{txnId}; delivered in /sync `to_device`).
-- device_inbox (migration 0004) holds the messages until the device syncs past them. Their
-- stream IDs come from to_device_stream_seq under one advisory lock (storage/to-device.ts), and
-- to_device_position records the highest committed one in the same transaction: delivered rows
-- are deleted, so the table's max(stream_id) could go back, and the position must not.

CREATE INDEX device_inbox_stream_id ON device_inbox (stream_id);

CREATE TABLE to_device_position (
  lock char(1) PRIMARY KEY DEFAULT 'X' CHECK (lock = 'X'),
  position bigint NOT NULL
);
COMMENT ON TABLE to_device_position IS 'The to-device stream''s highest committed stream ID (one row).';
INSERT INTO to_device_position (lock, position) VALUES ('X', 1);

CREATE TABLE to_device_txns (
  user_id text NOT NULL,
  device_id text NOT NULL,
  txn_id text NOT NULL,
  inserted_ts bigint NOT NULL,
  PRIMARY KEY (user_id, device_id, txn_id)
);
COMMENT ON TABLE to_device_txns IS 'Transaction IDs of /sendToDevice requests, so a retried request sends nothing twice (kept a day).';
CREATE INDEX to_device_txns_inserted ON to_device_txns (inserted_ts);
