-- Server-side key backup (client-server API "Server-side key backups"): each user's backup
-- versions, and the room keys backed up in them. The session data is encrypted by the client;
-- the server keeps it as it came.

CREATE TABLE e2e_room_keys_versions (
  user_id text NOT NULL,
  version bigint NOT NULL,
  algorithm text NOT NULL,
  auth_data text NOT NULL,
  etag bigint NOT NULL DEFAULT 0,
  deleted boolean NOT NULL DEFAULT false,
  PRIMARY KEY (user_id, version)
);
COMMENT ON TABLE e2e_room_keys_versions IS 'Key backup versions per user; the current one is the newest not deleted. etag moves on every change of its keys.';

CREATE TABLE e2e_room_keys (
  user_id text NOT NULL,
  version bigint NOT NULL,
  room_id text NOT NULL,
  session_id text NOT NULL,
  first_message_index integer NOT NULL,
  forwarded_count integer NOT NULL,
  is_verified boolean NOT NULL,
  session_data text NOT NULL,
  PRIMARY KEY (user_id, version, room_id, session_id)
);
COMMENT ON TABLE e2e_room_keys IS 'Backed-up room keys: one per backup version, room and megolm session.';
