-- A replication request's answer is stored as one row per request (the event IDs in request
-- order), not one row per event: a request of 100 events used to write 100 rows and 200 index
-- entries inside the persist transaction. A request that a rejection cut short and a retry
-- resumed has one row per attempt, keyed by the index of its first event.
--
-- Code older than this migration writes the per-event shape, so the schema compatibility demand
-- rises to 8 (storage/migrations.ts SCHEMA_COMPAT_VERSION): stop old persisters before migrating.

ALTER TABLE replication_requests RENAME TO replication_requests_v7;
ALTER TABLE replication_requests_v7 RENAME CONSTRAINT replication_requests_pkey TO replication_requests_v7_pkey;
ALTER INDEX replication_requests_inserted RENAME TO replication_requests_v7_inserted;

CREATE TABLE replication_requests (
  request_id text NOT NULL,
  first_idx integer NOT NULL,
  event_ids text[] NOT NULL,
  inserted_ts bigint NOT NULL,
  CONSTRAINT replication_requests_pkey PRIMARY KEY (request_id, first_idx)
);
COMMENT ON TABLE replication_requests IS
  'Replication request ID -> the events it persisted, in request order from first_idx, so a retried request returns the first answer, also after a persister restart.';
CREATE INDEX replication_requests_inserted ON replication_requests (inserted_ts);

INSERT INTO replication_requests (request_id, first_idx, event_ids, inserted_ts)
  SELECT request_id, idx, ARRAY[event_id], inserted_ts FROM replication_requests_v7;
DROP TABLE replication_requests_v7;
