-- The content repository (client-server API "Content repository"): files users upload, kept in
-- PostgreSQL so that every api worker of a deployment serves every file (no shared disk).
CREATE TABLE media (
  media_id text PRIMARY KEY,
  user_id text NOT NULL,
  content_type text NOT NULL,
  upload_name text,
  size bigint NOT NULL,
  created_ts bigint NOT NULL,
  -- NULL: created (POST /_matrix/media/v1/create) and not uploaded yet; usable until expires_ts.
  content bytea,
  expires_ts bigint
);
COMMENT ON TABLE media IS 'Uploaded files (mxc://<server_name>/<media_id>), their bytes in content (NULL while an asynchronous upload is pending).';
CREATE INDEX media_user ON media (user_id, created_ts);
