-- Exports per user and minute beside the reads, maintained by the detector in the same transaction as its cursor
-- step: the input of the exports-per-day behaviour baseline (issue #6).
ALTER TABLE activity_rollup ADD COLUMN exports BIGINT NOT NULL DEFAULT 0
