-- 005_responses.sql - which backend holds each stored response.
--
-- A response made through the Responses API is stored in the region that
-- made it, and only there: a follow-up (previous_response_id) and a GET or
-- DELETE of its id must go to that same backend. The audit row of the call
-- that made it records the id; the partial index holds only those rows, so
-- chat and embedding rows pay nothing for it.
ALTER TABLE audit_log ADD COLUMN response_id TEXT;
CREATE INDEX audit_log_response ON audit_log(response_id) WHERE response_id IS NOT NULL;
