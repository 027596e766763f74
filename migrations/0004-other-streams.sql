-- Single-writer streams besides events: account data (incl. push rules), receipts, to-device.

CREATE SEQUENCE account_data_stream_seq;
SELECT nextval('account_data_stream_seq');

CREATE TABLE account_data (
  user_id text NOT NULL,
  room_id text NOT NULL DEFAULT '',
  type text NOT NULL,
  content jsonb NOT NULL,
  stream_id bigint NOT NULL,
  PRIMARY KEY (user_id, room_id, type)
);
COMMENT ON TABLE account_data IS
  'Per-user account data, global (room_id = '''') and per room; stream_id orders changes for sync.';
CREATE INDEX account_data_stream ON account_data (user_id, stream_id);

CREATE TABLE push_rules (
  user_id text PRIMARY KEY,
  rules jsonb NOT NULL,
  stream_id bigint NOT NULL
);
COMMENT ON TABLE push_rules IS 'Each user''s push rule set (the m.push_rules account data content).';

CREATE SEQUENCE receipts_stream_seq;
SELECT nextval('receipts_stream_seq');

CREATE TABLE receipts (
  room_id text NOT NULL,
  receipt_type text NOT NULL,
  user_id text NOT NULL,
  thread_id text NOT NULL DEFAULT '',
  event_id text NOT NULL,
  data jsonb NOT NULL,
  stream_id bigint NOT NULL,
  PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
);
COMMENT ON TABLE receipts IS 'Latest receipt per (room, type, user, thread); stream_id orders them for sync.';
CREATE INDEX receipts_stream ON receipts (room_id, stream_id);

CREATE SEQUENCE to_device_stream_seq;
SELECT nextval('to_device_stream_seq');

CREATE TABLE device_inbox (
  user_id text NOT NULL,
  device_id text NOT NULL,
  stream_id bigint NOT NULL,
  message_json text NOT NULL,
  PRIMARY KEY (user_id, device_id, stream_id)
);
COMMENT ON TABLE device_inbox IS 'To-device messages waiting for a device; deleted once the device syncs past them.';
