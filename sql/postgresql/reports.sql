-- reports.sql - reporting views over the audit table, for psql and for
-- `aigw report`. Recreated by every `aigw db migrate` (and on start), so they
-- always match the program's schema. Times are UTC.
-- (PostgreSQL 15 version of sql/reports.sql: same views, columns and values.)
--
--   psql aigw -c "SELECT * FROM report_usage WHERE day >= to_char(now() AT TIME ZONE 'UTC' - interval '7 days', 'YYYY-MM-DD')"
--
-- Differences from the SQLite text, for the same results:
--  * Times: to_char(to_timestamp(s) AT TIME ZONE 'UTC', ...) formats in UTC
--    whatever the session's TimeZone, the same text as SQLite's date(),
--    datetime() and strftime() (the seconds are the same integer divisions).
--  * REAL arithmetic: PostgreSQL reads 100.0 as NUMERIC, so the ratios cast
--    to DOUBLE PRECISION to compute the very doubles SQLite computes.
--  * round(x, n): PostgreSQL has no round(double precision, int), and
--    round(numeric, n) of the exact quotient differs from SQLite's round() at
--    the edges. SQLite (3.40) rounds x + 5e-(n+1) + x * 3e-16 down to n
--    decimals (the 3e-16 makes round(0.15, 1) 0.2 and round(2.675, 2) 2.68;
--    it applies while n + (binary exponent of x) / 3 < 15). The views do the
--    same with exact integer arithmetic on the bits of the double x = m * 2^-s
--    (float8send): floor(|x| * 10^n * (1 + 3e-16) + 1/2) / 10^n, signed like x.
--    |x| < 2^-60 rounds to 0, |x| > 2^52 is returned as it is (as in SQLite).
--  * Division by zero is an error in PostgreSQL, NULL in SQLite: NULLIF.
--  * sum() over BIGINT is NUMERIC in PostgreSQL: cast back to BIGINT.

DROP VIEW IF EXISTS report_usage CASCADE;
DROP VIEW IF EXISTS report_budget CASCADE;
DROP VIEW IF EXISTS report_latency CASCADE;
DROP VIEW IF EXISTS report_errors CASCADE;
DROP VIEW IF EXISTS report_failovers CASCADE;
DROP VIEW IF EXISTS report_refusals CASCADE;
DROP VIEW IF EXISTS report_traffic CASCADE;

-- SQLite's round(x, n) (see the top), once for every view that rounds.
CREATE OR REPLACE FUNCTION sqlite_round(x float8, n int) RETURNS float8
LANGUAGE sql IMMUTABLE STRICT AS $$
SELECT CASE WHEN x = 0 OR abs(x) > 4503599627370496 THEN x
            WHEN abs(x) < 2::float8 ^ -60 THEN sign(x) * 0.0::float8
            ELSE sign(x) * (div(y.m * (10::numeric ^ n)
                                    * (10000000000000000 + CASE WHEN n + (y.e - 1023) / 3 < 15 THEN 3 ELSE 0 END)
                                + 5000000000000000 * y.p2s,
                                10000000000000000 * y.p2s) * (10::numeric ^ -n))::float8
       END
FROM (SELECT ('x' || encode(float8send(abs(x)), 'hex'))::bit(64)::bigint AS bits) b
CROSS JOIN LATERAL (
    -- x = m * 2^-s: e the biased exponent, m the 53-bit significand, p2s = 2^s
    SELECT (b.bits >> 52)::int AS e,
           ((b.bits & 4503599627370495) + 4503599627370496)::numeric AS m,
           CASE WHEN abs(x) BETWEEN 2::float8 ^ -60 AND 4503599627370496 THEN
               (1::bigint << ((1075 - (b.bits >> 52))::int / 2))::numeric
             * (1::bigint << ((1075 - (b.bits >> 52))::int - (1075 - (b.bits >> 52))::int / 2))
           END AS p2s
) y
$$;

-- Usage per user per day: requests and tokens (refused requests used none).
CREATE VIEW report_usage AS
SELECT to_char(to_timestamp(day_ms / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day,
       user_id, requests, succeeded, failed, refused,
       prompt_tokens, completion_tokens, total_tokens, day_ms AS first_ms
FROM usage_daily;

-- Spend against budget per user and period (NULL budget: the configured default).
-- period_start is TEXT, as in SQLite ('total' or 'YYYY-MM-DD HH:MM:SS').
CREATE VIEW report_budget AS
SELECT b.user_id,
       CASE WHEN b.period_start = 0 THEN 'total'
            ELSE to_char(to_timestamp(b.period_start) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') END AS period_start,
       coalesce(u.budget_period, 'default') AS period,
       b.used, b.reserved,
       u.token_budget AS budget,
       sqlite_round(CASE WHEN u.token_budget > 0 THEN 100.0::float8 * b.used / u.token_budget END, 1)
           AS used_pct,
       b.period_start * 1000 AS first_ms
FROM budget_usage b LEFT JOIN users u ON u.user_id = b.user_id;

-- Latency percentiles of backend calls per backend per hour: a running sum
-- over the latency buckets (window functions), nearest rank. The thresholds
-- are compared in DOUBLE PRECISION, as SQLite compares them in REAL.
CREATE VIEW report_latency AS
WITH running AS (
    SELECT hour_ms, backend, bucket_ms,
           (sum(calls) OVER (PARTITION BY hour_ms, backend ORDER BY bucket_ms))::bigint AS cum,
           (sum(calls) OVER (PARTITION BY hour_ms, backend))::bigint AS n
    FROM latency_hourly
)
SELECT backend,
       to_char(to_timestamp(hour_ms / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:00') AS hour,
       max(n) AS calls,
       min(CASE WHEN cum >= 0.50::float8 * n THEN bucket_ms END) AS p50_ms,
       min(CASE WHEN cum >= 0.95::float8 * n THEN bucket_ms END) AS p95_ms,
       min(CASE WHEN cum >= 0.99::float8 * n THEN bucket_ms END) AS p99_ms,
       max(bucket_ms) AS max_ms,
       hour_ms AS first_ms
FROM running
GROUP BY hour_ms, backend;

-- Error rate per backend per hour (over calls), and how much traffic it took over.
CREATE VIEW report_errors AS
SELECT h.backend,
       to_char(to_timestamp(h.hour_ms / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:00') AS hour,
       h.attempts AS calls, h.failures,
       sqlite_round(1.0::float8 * h.failures / NULLIF(h.attempts, 0), 4) AS error_rate,
       h.answered, h.failed_over,
       h.hour_ms AS first_ms
FROM backend_hourly h;

-- Requests that needed more than one attempt, and from where to where.
-- json_extract(attempts_detail, '$[0].backend') / '$[0].status': the first
-- attempt's backend (TEXT) and HTTP status (an integer in the JSON).
CREATE VIEW report_failovers AS
SELECT request_id,
       to_char(to_timestamp(ts_ms / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS time,
       attempts_detail::json -> 0 ->> 'backend' AS from_backend,
       (attempts_detail::json -> 0 ->> 'status')::bigint AS from_status,
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
SELECT to_char(to_timestamp(hour_ms / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:00') AS hour,
       requests, succeeded, failed, refused, prompt_tokens, completion_tokens, total_tokens,
       hour_ms AS first_ms
FROM usage_hourly;
