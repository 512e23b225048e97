-- 004_lean_audit_indexes.sql - fewer index pages written per request.
-- (PostgreSQL 15 version of sql/004_lean_audit_indexes.sql.)
--
-- The reports read the rollup tables of 003, so these two indexes only cost:
-- every audit row touched a page of each on insert and again on completion.
-- Ad-hoc questions per user or backend are answered by usage_daily,
-- backend_hourly and latency_hourly, or by a scan of the time index.
-- (Plain DROP INDEX, not CONCURRENTLY: the migration runs in a transaction.)
DROP INDEX IF EXISTS audit_log_user_ts;
DROP INDEX IF EXISTS audit_log_backend_ts;
