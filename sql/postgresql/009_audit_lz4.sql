-- 009_audit_lz4.sql - the audit bodies are compressed with lz4, not pglz.
-- (PostgreSQL 15 version of sql/009_audit_lz4.sql.)
--
-- A settled request writes its response body (a few kilobytes of JSON, more
-- for a stream) into audit_log, and PostgreSQL compresses every value over
-- about 2 kB. With the default pglz that compression was a twelfth of the
-- server's time under load; lz4 compresses the same JSON several times
-- faster, for about the same size. Only values written from now on use it;
-- rows already written stay readable as they are. A server built without
-- lz4 keeps pglz (the migration then changes nothing).
DO $$
BEGIN
    ALTER TABLE audit_log ALTER COLUMN request_body SET COMPRESSION lz4,
                          ALTER COLUMN response_body SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'this PostgreSQL has no lz4; audit bodies stay compressed with pglz';
END
$$;
