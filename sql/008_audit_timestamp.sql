-- 008_audit_timestamp.sql - audit_log.timestamp on PostgreSQL is written
-- with the row (see sql/postgresql/008_audit_timestamp.sql).
--
-- On SQLite the column stays VIRTUAL: computed when read, it costs a write
-- nothing. This migration changes nothing here; it keeps the two schemas'
-- version numbers in step, so `aigw db migrate` reports the same version on
-- both.
SELECT 1;
