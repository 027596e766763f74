-- Profiles of local users (GET/PUT /profile/{userId}), and indexes that give the account data
-- stream its position (the highest committed stream_id; see storage/account-data.ts).

CREATE TABLE profiles (
  user_id text PRIMARY KEY REFERENCES users (user_id),
  displayname text,
  avatar_url text
);
COMMENT ON TABLE profiles IS 'Display name and avatar URL of each local user; a row is created at registration.';

CREATE INDEX account_data_stream_id ON account_data (stream_id);
CREATE INDEX push_rules_stream_id ON push_rules (stream_id);
