-- Search over imported history: events imported into a room's past (the backfill stream, negative
-- stream orderings) are indexed too. `backfill_id` is how far the indexer has read that stream,
-- as a backfill stream ID (stream ordering = -id): every event with -backfill_id <=
-- stream_ordering < 0 has been considered. 0: none yet, so a deployment with imported history
-- indexes it all after this migration.

ALTER TABLE event_search_position ADD COLUMN backfill_id bigint NOT NULL DEFAULT 0;
COMMENT ON COLUMN event_search_position.backfill_id IS 'The backfill stream ID up to which every imported event (stream ordering -ID) has been considered for event_search.';
