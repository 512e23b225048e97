-- 006_traffic.sql - requests and tokens per hour, for the dashboard's charts.
-- (PostgreSQL 15 version of sql/006_traffic.sql.)
--
-- usage_daily answers "who used how much" per UTC day; the dashboard also
-- draws traffic over the last hour and day, so the same counts are kept per
-- hour for all users together. One row per hour: a group-committed batch
-- adds to it once, whatever the number of requests it settles.
CREATE TABLE usage_hourly (
    hour_ms           BIGINT PRIMARY KEY,         -- start of the hour, Unix ms
    requests          BIGINT NOT NULL DEFAULT 0,
    succeeded         BIGINT NOT NULL DEFAULT 0,
    failed            BIGINT NOT NULL DEFAULT 0,
    refused           BIGINT NOT NULL DEFAULT 0,
    prompt_tokens     BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    total_tokens      BIGINT NOT NULL DEFAULT 0
);

-- The hours before this migration, from the audit rows that were settled.
INSERT INTO usage_hourly(hour_ms, requests, succeeded, failed, refused, prompt_tokens,
                         completion_tokens, total_tokens)
SELECT ts_ms - ts_ms % 3600000, count(*),
       count(*) FILTER (WHERE status = 'success'),
       count(*) FILTER (WHERE status IN ('error', 'abandoned')),
       count(*) FILTER (WHERE status = 'refused'),
       sum(prompt_tokens), sum(completion_tokens),
       sum(CASE WHEN status = 'abandoned' THEN reserved_tokens ELSE total_tokens END)
FROM audit_log
WHERE status <> 'pending'
GROUP BY ts_ms - ts_ms % 3600000;
