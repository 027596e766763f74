-- Indexes for the client API's room reads and /sync (storage/room-reads.ts, storage/sync.ts).

-- State at an event (/context, /state after leaving, sync state at the start of a timeline):
-- the latest state event per (type, state_key) of one room up to a point.
CREATE INDEX state_events_room_key ON state_events (room_id, type, state_key);

-- Membership of every user of a room at a point (/members?at=).
CREATE INDEX room_memberships_room_user ON room_memberships (room_id, user_id, stream_ordering);
