-- End-to-end encryption keys (client-server API "End-to-End Encryption"): what devices publish
-- so that others can encrypt for them. The server stores and hands them out; it never sees a
-- secret key.
--
-- Device lists: device_lists_changes holds, per user, the stream ID of the last change of their
-- devices or cross-signing keys (a device's keys uploaded or changed, a device deleted, new
-- cross-signing keys). Its own ordered stream (device_lists_stream_seq under one advisory lock,
-- storage/ordered-streams.ts), read by /sync `device_lists` and /keys/changes.

CREATE TABLE e2e_device_keys (
  user_id text NOT NULL,
  device_id text NOT NULL,
  key_json text NOT NULL,
  PRIMARY KEY (user_id, device_id)
);
COMMENT ON TABLE e2e_device_keys IS 'Each device''s identity keys (the device_keys object of /keys/upload, signatures included).';

CREATE TABLE e2e_one_time_keys (
  user_id text NOT NULL,
  device_id text NOT NULL,
  algorithm text NOT NULL,
  key_id text NOT NULL,
  key_json text NOT NULL,
  PRIMARY KEY (user_id, device_id, algorithm, key_id)
);
COMMENT ON TABLE e2e_one_time_keys IS 'One-time keys not claimed yet; /keys/claim hands each out once and deletes it.';

CREATE TABLE e2e_fallback_keys (
  user_id text NOT NULL,
  device_id text NOT NULL,
  algorithm text NOT NULL,
  key_id text NOT NULL,
  key_json text NOT NULL,
  used boolean NOT NULL DEFAULT false,
  PRIMARY KEY (user_id, device_id, algorithm)
);
COMMENT ON TABLE e2e_fallback_keys IS 'Each device''s fallback key per algorithm, handed out when its one-time keys ran out.';

CREATE TABLE e2e_cross_signing_keys (
  user_id text NOT NULL,
  key_type text NOT NULL CHECK (key_type IN ('master', 'self_signing', 'user_signing')),
  public_key text NOT NULL,
  key_json text NOT NULL,
  PRIMARY KEY (user_id, key_type)
);
COMMENT ON TABLE e2e_cross_signing_keys IS 'Each user''s cross-signing keys (signatures made at upload included).';

CREATE TABLE e2e_signatures (
  target_user_id text NOT NULL,
  target_key_id text NOT NULL,
  signer_user_id text NOT NULL,
  signer_key_id text NOT NULL,
  signature text NOT NULL,
  PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signer_key_id)
);
COMMENT ON TABLE e2e_signatures IS 'Signatures of /keys/signatures/upload on a device (target_key_id: device ID) or a master key (its public key); another user''s are shown to the signer only.';

CREATE SEQUENCE device_lists_stream_seq;
SELECT nextval('device_lists_stream_seq');

CREATE TABLE device_lists_changes (
  user_id text PRIMARY KEY,
  stream_id bigint NOT NULL
);
COMMENT ON TABLE device_lists_changes IS 'Stream ID of the last change of each user''s devices or cross-signing keys.';
CREATE INDEX device_lists_changes_stream_id ON device_lists_changes (stream_id);
