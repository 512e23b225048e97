-- 002_metrics.sql - counters for /metrics, shared by every worker.
-- (PostgreSQL 15 version of sql/002_metrics.sql.)
--
-- Each request adds to a few rows inside the transaction that settles it, so
-- the counters are exactly as consistent as the audit table, survive worker
-- restarts, and never decrease (unlike counts over audit_log, which pruning
-- shrinks). labels holds the rendered Prometheus label set.
CREATE TABLE metrics (
    name   TEXT NOT NULL,
    labels TEXT NOT NULL,
    value  DOUBLE PRECISION NOT NULL DEFAULT 0,
    PRIMARY KEY (name, labels)
);

-- The per-backend reports scan one backend's rows in time order.
CREATE INDEX audit_log_backend_ts ON audit_log(backend, ts_ms);
-- Refusal reports look only at refused rows.
CREATE INDEX audit_log_refused ON audit_log(ts_ms, error_code) WHERE status = 'refused';
