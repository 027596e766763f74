-- Asynchronous room deletions resume after the process running one stopped: the request's
-- options are kept with the deletion, so that another api worker (or the restarted one) can
-- finish it. A deletion is run under a session advisory lock of its ID, which a process that dies
-- lets go of with its connection.

ALTER TABLE room_deletions ADD COLUMN params jsonb NOT NULL DEFAULT '{}';
COMMENT ON COLUMN room_deletions.params IS 'The request''s options (new_room_user_id, room_name, message, purge, force_purge), for resuming it.';
CREATE INDEX room_deletions_unfinished ON room_deletions (started_ts) WHERE status IN ('shutting_down', 'purging');
