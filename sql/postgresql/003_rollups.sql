-- 003_rollups.sql - small per-day and per-hour tables the reports read.
-- (PostgreSQL 15 version of sql/003_rollups.sql.)
--
-- Added to in the transaction that settles (or refuses) each request, next to
-- the audit row, so the reports answer in milliseconds however large
-- audit_log grows, and stay as exact as the audit table. Latencies are kept
-- as counts per bucket of three significant digits (123.4 ms counts in the
-- 124 ms bucket), from which report_latency computes percentiles with window
-- functions; the exact values stay in audit_log.
CREATE TABLE usage_daily (
    day_ms            BIGINT NOT NULL,            -- start of the UTC day, Unix ms
    user_id           TEXT NOT NULL,              -- whose limits and budget applied
    requests          BIGINT NOT NULL DEFAULT 0,
    succeeded         BIGINT NOT NULL DEFAULT 0,
    failed            BIGINT NOT NULL DEFAULT 0,
    refused           BIGINT NOT NULL DEFAULT 0,
    prompt_tokens     BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    total_tokens      BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (day_ms, user_id)
);

CREATE TABLE backend_hourly (
    hour_ms     BIGINT NOT NULL,                  -- start of the hour, Unix ms
    backend     TEXT NOT NULL,
    attempts    BIGINT NOT NULL DEFAULT 0,        -- calls made to this backend
    failures    BIGINT NOT NULL DEFAULT 0,        -- calls that failed (and failed over or errored)
    answered    BIGINT NOT NULL DEFAULT 0,        -- requests this backend answered
    failed_over BIGINT NOT NULL DEFAULT 0,        -- of those, requests another backend failed first
    PRIMARY KEY (hour_ms, backend)
);

CREATE TABLE latency_hourly (
    hour_ms   BIGINT NOT NULL,
    backend   TEXT NOT NULL,
    bucket_ms DOUBLE PRECISION NOT NULL,          -- upper bound of the bucket
    calls     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (hour_ms, backend, bucket_ms)
);

-- The failover report reads only requests that needed more than one attempt.
CREATE INDEX audit_log_failovers ON audit_log(ts_ms) WHERE attempts > 1;
