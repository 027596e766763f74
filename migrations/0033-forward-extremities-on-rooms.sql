-- A room's forward extremities move onto its head row. Every persist transaction replaced them
-- with a DELETE and an INSERT on event_forward_extremities, under the head row's lock: each
-- batch left dead tuples, which autovacuum reclaims about once a minute, and the DELETE's plan
-- (a sequential scan of a table believed tiny) read every one of them. Under load the table
-- grew by over a hundred pages in 20 s and the scan took up to a fifth of the persist
-- statement. The set now rides in the head row the transaction already updates: no indexed
-- column changes, so the update stays HOT and the old version is pruned in its own page.
-- The old table's name stays as a read-only view for readers.

ALTER TABLE rooms ADD COLUMN forward_extremities text[] NOT NULL DEFAULT '{}';
COMMENT ON COLUMN rooms.forward_extremities IS
  'The events no accepted event references yet (sorted); the next local event takes (up to 10 of) them as prev_events.';

UPDATE rooms r SET forward_extremities = f.ids
FROM (SELECT room_id, array_agg(event_id ORDER BY event_id) AS ids FROM event_forward_extremities GROUP BY room_id) f
WHERE f.room_id = r.room_id;

DROP TABLE event_forward_extremities;

CREATE VIEW event_forward_extremities AS
  SELECT r.room_id, f.event_id FROM rooms r CROSS JOIN LATERAL unnest(r.forward_extremities) AS f(event_id);
COMMENT ON VIEW event_forward_extremities IS 'One row per forward extremity of a room (rooms.forward_extremities), for readers.';
