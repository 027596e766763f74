-- Media moderation (Synapse's admin media API): quarantined files are no longer served;
-- protected ones cannot be quarantined; old files can be deleted by age (retention).

ALTER TABLE media ADD COLUMN quarantined_by text;
ALTER TABLE media ADD COLUMN safe_from_quarantine boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN media.quarantined_by IS 'The admin who quarantined the file (no longer served), or NULL.';
COMMENT ON COLUMN media.safe_from_quarantine IS 'Protected: quarantines pass it by (admin media/protect).';
-- Deleting files older than a date (admin media/delete?before_ts=).
CREATE INDEX media_created ON media (created_ts);
