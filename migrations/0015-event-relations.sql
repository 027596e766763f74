-- Event relations (client-server API "Forming relationships between events"): one row per
-- event whose content carries `m.relates_to` with a `rel_type` and an `event_id` (threads,
-- edits, references, annotations), written by the persister in the event's own transaction.
-- Reads leave out relations whose event was redacted (its content, and so the relation, is
-- gone). Serves /relations, /threads and the aggregations bundled into served events.

CREATE TABLE event_relations (
  event_id text PRIMARY KEY,
  relates_to_id text NOT NULL,
  relation_type text NOT NULL,
  aggregation_key text,
  room_id text NOT NULL,
  sender text NOT NULL,
  type text NOT NULL,
  stream_ordering bigint NOT NULL
);
COMMENT ON TABLE event_relations IS 'The relation of each event that has one (m.relates_to): parent event, rel_type, key.';
CREATE INDEX event_relations_parent ON event_relations (relates_to_id, relation_type, stream_ordering);
CREATE INDEX event_relations_threads ON event_relations (room_id, relates_to_id, stream_ordering) WHERE relation_type = 'm.thread';

-- The relations of events stored before this migration.
INSERT INTO event_relations (event_id, relates_to_id, relation_type, aggregation_key, room_id, sender, type, stream_ordering)
SELECT e.event_id, r->>'event_id', r->>'rel_type', r->>'key', e.room_id, e.sender, e.type, e.stream_ordering
FROM events e
JOIN event_json j ON j.event_id = e.event_id
CROSS JOIN LATERAL (SELECT j.json::jsonb -> 'content' -> 'm.relates_to' AS r) rel
WHERE jsonb_typeof(r) = 'object' AND jsonb_typeof(r -> 'rel_type') = 'string' AND jsonb_typeof(r -> 'event_id') = 'string'
  AND e.state_key IS NULL
ON CONFLICT DO NOTHING;
