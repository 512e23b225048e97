-- reports.sql - reporting views over the audit table, for the sqlite3 shell
-- and for `aigw report`. Recreated by every `aigw db migrate` (and on start),
-- so they always match the program's schema. Times are UTC.
--
--   sqlite3 /var/lib/aigw/aigw.db 'SELECT * FROM report_usage WHERE day >= date("now", "-7 days")'

DROP VIEW IF EXISTS report_usage;
DROP VIEW IF EXISTS report_budget;
DROP VIEW IF EXISTS report_latency;
DROP VIEW IF EXISTS report_errors;
DROP VIEW IF EXISTS report_failovers;
DROP VIEW IF EXISTS report_refusals;
DROP VIEW IF EXISTS report_traffic;

-- Usage per user per day: requests and tokens (refused requests used none).
CREATE VIEW report_usage AS
SELECT date(day_ms / 1000, 'unixepoch') AS day, user_id, requests, succeeded, failed, refused,
       prompt_tokens, completion_tokens, total_tokens, day_ms AS first_ms
FROM usage_daily;

-- Spend against budget per user and period (NULL budget: the configured default).
CREATE VIEW report_budget AS
SELECT b.user_id,
       CASE WHEN b.period_start = 0 THEN 'total'
            ELSE datetime(b.period_start, 'unixepoch') END AS period_start,
       coalesce(u.budget_period, 'default') AS period,
       b.used, b.reserved,
       u.token_budget AS budget,
       CASE WHEN u.token_budget > 0 THEN round(100.0 * b.used / u.token_budget, 1) END AS used_pct,
       b.period_start * 1000 AS first_ms
FROM budget_usage b LEFT JOIN users u ON u.user_id = b.user_id;

-- Latency percentiles of backend calls per backend per hour: a running sum
-- over the latency buckets (window functions), nearest rank.
CREATE VIEW report_latency AS
WITH running AS (
    SELECT hour_ms, backend, bucket_ms,
           sum(calls) OVER (PARTITION BY hour_ms, backend ORDER BY bucket_ms) AS cum,
           sum(calls) OVER (PARTITION BY hour_ms, backend) AS n
    FROM latency_hourly
)
SELECT backend,
       strftime('%Y-%m-%d %H:00', hour_ms / 1000, 'unixepoch') AS hour,
       max(n) AS calls,
       min(CASE WHEN cum >= 0.50 * n THEN bucket_ms END) AS p50_ms,
       min(CASE WHEN cum >= 0.95 * n THEN bucket_ms END) AS p95_ms,
       min(CASE WHEN cum >= 0.99 * n THEN bucket_ms END) AS p99_ms,
       max(bucket_ms) AS max_ms,
       hour_ms AS first_ms
FROM running
GROUP BY hour_ms, backend;

-- Error rate per backend per hour (over calls), and how much traffic it took over.
CREATE VIEW report_errors AS
SELECT backend,
       strftime('%Y-%m-%d %H:00', hour_ms / 1000, 'unixepoch') AS hour,
       attempts AS calls, failures,
       round(1.0 * failures / attempts, 4) AS error_rate,
       answered, failed_over,
       hour_ms AS first_ms
FROM backend_hourly;

-- Requests that needed more than one attempt, and from where to where.
CREATE VIEW report_failovers AS
SELECT request_id,
       strftime('%Y-%m-%dT%H:%M:%SZ', ts_ms / 1000, 'unixepoch') AS time,
       json_extract(attempts_detail, '$[0].backend') AS from_backend,
       json_extract(attempts_detail, '$[0].status') AS from_status,
       backend AS to_backend,
       attempts,
       status,
       ts_ms AS first_ms
FROM audit_log
WHERE attempts > 1;

-- The most frequent reasons requests were refused.
CREATE VIEW report_refusals AS
SELECT error_code AS reason, count(*) AS refused, max(ts_ms) AS last_ms, min(ts_ms) AS first_ms
FROM audit_log
WHERE status = 'refused'
GROUP BY error_code;

-- Requests and tokens per hour, all users together (the dashboard's charts).
CREATE VIEW report_traffic AS
SELECT strftime('%Y-%m-%d %H:00', hour_ms / 1000, 'unixepoch') AS hour, requests, succeeded,
       failed, refused, prompt_tokens, completion_tokens, total_tokens, hour_ms AS first_ms
FROM usage_hourly;
