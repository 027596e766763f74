-- Per-user overrides of the message rate limit (`rc_message`), set through Synapse's admin API
-- (`/_synapse/admin/v1/users/{userId}/override_ratelimit`): bridges and bots that send a lot.
-- 0 and 0 mean no limit at all.

CREATE TABLE ratelimit_overrides (
  user_id text PRIMARY KEY,
  messages_per_second double precision NOT NULL CHECK (messages_per_second >= 0),
  burst_count double precision NOT NULL CHECK (burst_count >= 0)
);
COMMENT ON TABLE ratelimit_overrides IS 'Per-user message rate limits replacing rc_message (0 and 0: no limit).';
