-- 005_responses.sql - which backend holds each stored response.
-- (PostgreSQL 15 version of sql/005_responses.sql.)
--
-- A response made through the Responses API is stored in the region that
-- made it, and only there: a follow-up (previous_response_id) and a GET or
-- DELETE of its id must go to that same backend. The audit row of the call
-- that made it records the id; the partial index holds only those rows, so
-- chat and embedding rows pay nothing for it.
-- As in SQLite the new column goes last; adding a nullable column without a
-- default only changes the catalog, existing rows are not rewritten.
ALTER TABLE audit_log ADD COLUMN response_id TEXT;
CREATE INDEX audit_log_response ON audit_log(response_id) WHERE response_id IS NOT NULL;
