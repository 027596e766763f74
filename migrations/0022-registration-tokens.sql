-- Registration tokens (client-server API `m.login.registration_token`, spec v1.2): with
-- `registration.requires_token`, signing up needs a token a server admin made through Synapse's
-- admin API (`/_synapse/admin/v1/registration_tokens`). A registration consumes one use
-- (`completed`) in the transaction that creates the account.

CREATE TABLE registration_tokens (
  token text PRIMARY KEY,
  -- NULL: unlimited.
  uses_allowed integer CHECK (uses_allowed IS NULL OR uses_allowed >= 0),
  -- Registrations in progress (always 0 here: the single-stage flow validates and registers at once).
  pending integer NOT NULL DEFAULT 0,
  completed integer NOT NULL DEFAULT 0,
  -- Milliseconds since the epoch; NULL: never expires.
  expiry_time bigint
);
COMMENT ON TABLE registration_tokens IS 'Tokens that allow signing up when registration requires one.';
