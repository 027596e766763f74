-- Cross-process revocation of cached access tokens. Every process caches resolved tokens for up
-- to 30 s (api/authenticator.ts); a logout, device deletion, password change or deactivation made
-- through one process is logged here by triggers, whatever code path deleted the token, and every
-- process polls the recent rows to drop those tokens from its cache within a second.

CREATE TABLE access_token_revocations (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  token_id bigint NOT NULL,
  revoked_ts bigint NOT NULL
);
COMMENT ON TABLE access_token_revocations IS
  'Access tokens deleted or whose user was deactivated, with the time (ms, database clock): processes drop them from their token caches. Rows older than an hour are pruned by the background task.';
CREATE INDEX access_token_revocations_ts ON access_token_revocations (revoked_ts);

CREATE FUNCTION myelin_now_ms() RETURNS bigint LANGUAGE sql VOLATILE AS
  $$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint $$;

CREATE FUNCTION myelin_log_deleted_token() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO access_token_revocations (token_id, revoked_ts) VALUES (OLD.id, myelin_now_ms());
  RETURN OLD;
END $$;
CREATE TRIGGER access_tokens_log_delete AFTER DELETE ON access_tokens
  FOR EACH ROW EXECUTE FUNCTION myelin_log_deleted_token();

CREATE FUNCTION myelin_log_deactivated_user_tokens() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO access_token_revocations (token_id, revoked_ts)
    SELECT id, myelin_now_ms() FROM access_tokens WHERE user_id = NEW.user_id;
  RETURN NEW;
END $$;
CREATE TRIGGER users_log_deactivation AFTER UPDATE OF deactivated ON users
  FOR EACH ROW WHEN (NEW.deactivated AND NOT OLD.deactivated) EXECUTE FUNCTION myelin_log_deactivated_user_tokens();
