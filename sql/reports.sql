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

-- Usage per user per day: requests and tokens (refused requests are counted
-- apart; they used no tokens).
CREATE VIEW report_usage AS
SELECT date(ts_ms / 1000, 'unixepoch') AS day,
       coalesce(end_user, user_id) AS user_id,
       count(*) AS requests,
       sum(status = 'success') AS succeeded,
       sum(status = 'refused') AS refused,
       sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens,
       sum(total_tokens) AS total_tokens,
       min(ts_ms) AS first_ms
FROM audit_log
GROUP BY day, coalesce(end_user, user_id);

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

-- Latency percentiles per backend per hour (window functions: nearest rank).
CREATE VIEW report_latency AS
WITH ranked AS (
    SELECT backend, ts_ms / 3600000 AS hour_n, latency_ms,
           row_number() OVER (PARTITION BY backend, ts_ms / 3600000 ORDER BY latency_ms) AS rn,
           count(*) OVER (PARTITION BY backend, ts_ms / 3600000) AS n
    FROM audit_log
    WHERE backend IS NOT NULL AND status IN ('success', 'error') AND latency_ms IS NOT NULL
)
SELECT backend,
       strftime('%Y-%m-%d %H:00', hour_n * 3600, 'unixepoch') AS hour,
       max(n) AS requests,
       round(min(CASE WHEN rn >= 0.50 * n THEN latency_ms END), 1) AS p50_ms,
       round(min(CASE WHEN rn >= 0.95 * n THEN latency_ms END), 1) AS p95_ms,
       round(min(CASE WHEN rn >= 0.99 * n THEN latency_ms END), 1) AS p99_ms,
       round(max(latency_ms), 1) AS max_ms,
       hour_n * 3600000 AS first_ms
FROM ranked
GROUP BY backend, hour_n;

-- Error rate per backend per hour.
CREATE VIEW report_errors AS
SELECT backend,
       strftime('%Y-%m-%d %H:00', ts_ms / 3600000 * 3600, 'unixepoch') AS hour,
       count(*) AS requests,
       sum(status = 'error') AS errors,
       round(1.0 * sum(status = 'error') / count(*), 4) AS error_rate,
       sum(attempts > 1) AS failed_over,
       ts_ms / 3600000 * 3600000 AS first_ms
FROM audit_log
WHERE backend IS NOT NULL AND status IN ('success', 'error')
GROUP BY backend, ts_ms / 3600000;

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
