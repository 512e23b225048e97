-- 009_audit_lz4.sql - audit bodies on PostgreSQL are compressed with lz4
-- (see sql/postgresql/009_audit_lz4.sql).
--
-- SQLite stores the bodies as written, uncompressed. This migration changes
-- nothing here; it keeps the two schemas' version numbers in step, so
-- `aigw db migrate` reports the same version on both.
SELECT 1;
