-- Server-side search (client-server API "Server Side Search", `POST /search`). The text of each
-- message body, room name and room topic, as a PostgreSQL full-text vector. Filled behind the
-- events stream by the search indexer on the background process (api/search-indexer.ts), never
-- by the persisters: the persist path pays no index entry for it. `event_search_position` is how
-- far the indexer has read the events stream; rows and position move in one statement, so an
-- event is indexed once whatever the crashes.

CREATE TABLE event_search (
  event_id text PRIMARY KEY,
  room_id text NOT NULL,
  stream_ordering bigint NOT NULL,
  sender text NOT NULL,
  type text NOT NULL,
  -- Which field the text came from: content.body, content.name or content.topic.
  key text NOT NULL,
  vector tsvector NOT NULL
);
COMMENT ON TABLE event_search IS 'Full-text vectors of events for /search, filled by the search indexer behind the events stream.';
-- The one index beside the key: a search's rooms, keys and order are applied to the matches.
CREATE INDEX event_search_vector ON event_search USING gin (vector);

CREATE TABLE event_search_position (
  lock boolean PRIMARY KEY DEFAULT true CHECK (lock),
  stream_ordering bigint NOT NULL
);
COMMENT ON TABLE event_search_position IS 'The events stream position up to which every event has been considered for event_search.';
INSERT INTO event_search_position (stream_ordering) VALUES (0);
