-- 007_audit_user_index.sql - a user's audit rows, newest first, at any age.
-- (PostgreSQL 15 version of sql/007_audit_user_index.sql.)
--
-- The admin API and the dashboard list a user's most recent rows. Without
-- an index on the user, that walks the time index back through every row of
-- the period (a second and more for a user with few rows in a month of a
-- busy gateway). The index costs one entry per audit row written (and one
-- per new row version on PostgreSQL, whose completion is an update).
CREATE INDEX IF NOT EXISTS audit_log_user_ts ON audit_log(user_id, ts_ms);
