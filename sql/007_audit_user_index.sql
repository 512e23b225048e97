-- 007_audit_user_index.sql - a user's audit rows, newest first, at any age.
--
-- The admin API and the dashboard list a user's most recent rows. Without
-- an index on the user, that walks the time index back through every row of
-- the period (a second and more for a user with few rows in a month of a
-- busy gateway). The index costs one entry per audit row written; a row's
-- completion changes neither column, so it does not touch the index again.
CREATE INDEX IF NOT EXISTS audit_log_user_ts ON audit_log(user_id, ts_ms);
