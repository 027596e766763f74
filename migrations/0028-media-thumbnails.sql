-- Thumbnails of uploaded images (the content repository's …/thumbnail/…), made on first request
-- at the configured sizes (config media.thumbnail_sizes) and kept, so that any api worker serves
-- them without decoding the image again.

CREATE TABLE media_thumbnails (
  media_id text NOT NULL REFERENCES media (media_id) ON DELETE CASCADE,
  width integer NOT NULL,
  height integer NOT NULL,
  method text NOT NULL CHECK (method IN ('crop', 'scale')),
  -- Both NULL: the file is its own thumbnail at this size (smaller already, or not decodable).
  content_type text,
  content bytea,
  created_ts bigint NOT NULL,
  PRIMARY KEY (media_id, width, height, method),
  CHECK ((content_type IS NULL) = (content IS NULL))
);
COMMENT ON TABLE media_thumbnails IS 'One row per image and configured thumbnail size (width, height, method) once made: its bytes, or NULL when the file itself serves.';
