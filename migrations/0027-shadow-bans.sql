-- Shadow bans (Synapse's admin API `/_synapse/admin/v1/users/{userId}/shadow_ban`): a spammer's
-- messages, invites and typing are answered as if they worked and go nowhere, so that they do not
-- learn they were stopped.

ALTER TABLE users ADD COLUMN shadow_banned boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN users.shadow_banned IS 'Sends, invites and typing of this user are answered and dropped (admin API shadow_ban).';
