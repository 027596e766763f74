-- The receipts stream's position is the highest committed stream_id (storage/receipts.ts holds
-- one advisory lock from allocation to commit, as account data does): this index answers it,
-- and which rooms changed after a position, without reading the whole table.

CREATE INDEX receipts_stream_id ON receipts (stream_id);
