#!/usr/bin/env python3
"""The admin API's response times on a large database (`make bench`, section admin).

docs/ADMIN_API.md promises that the admin API stays fast at 1,000,000 audit
rows: the reports read the rollup tables (usage_daily, usage_hourly,
backend_hourly, latency_hourly), not audit_log, and the target is 200 ms per
call. This measures it, as a benchmark figure and not a test:

 1. A database made as aigw makes it (`aigw db migrate`, an admin user and
    its key made with `aigw user add` / `aigw key create`), then seeded
    directly with sqlite3 in one transaction (small lookup tables with
    executemany, the rows made from them by SQLite in one INSERT ... SELECT;
    the seconds printed): ROWS audit rows (default
    1,000,000) over the last 30 days, as aigw writes them (time-ordered UUIDv7
    request ids, 200 users of very different activity plus one with only three
    rows, 3 backends, 3 models, ~95% success / 3% error / 2% refused, ~2% with
    more than one attempt and aigw's attempts_detail JSON, redacted bodies),
    and the rollup rows aigw would have added while settling them
    (metrics.c's rules, latency buckets of three significant digits), the
    users and their keys, budget_usage for every period, the breakers.
 2. aigw serve (BENCH_WORKERS workers) behind nginx with the shipped site
    config, as bench.py starts aigw-nginx.
 3. Every GET of the admin API, one kept-alive connection, sequential calls:
    a warm-up pass over all of them, then per line a short warm-up and CALLS
    calls (fewer if a line takes more than a few seconds), and one write
    (PATCH /admin/api/users toggling a user's disabled flag), and
    GET /dashboard. Wall-clock ms per call from the client: median, p95, max.

Prints a table (stdout), writes tests/bench/results/latest-admin.json.
Exits non-zero only when an endpoint answers other than 200 (or the gateway
does not start); a missed target is a figure, not a failure.

    AIGW_BIN=./aigw AIGW_SRCDIR=. /usr/bin/python3 tests/bench/admin_api.py [--rows N]

Python 3 standard library only; reuses bench.py's process handling (process
groups recorded for run.sh's trap, logs in the work directory).
"""
import argparse
import http.client
import json
import math
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)
import bench  # noqa: E402 -- its helpers: spawn/stop, nginx + aigw serve, logs

TARGET_MS = 200.0
DAY_MS = 86400000
HOUR_MS = 3600000
SPAN_DAYS = 30
SINCES = (3600, 86400, 2592000)         # the last hour, day, 30 days
REPORTS = ("usage", "budget", "errors", "latency", "failovers", "refusals", "traffic")
ADMIN = "ops"                           # the caller, role AI.Admin
PATCH_USER = "bench-patch"              # the user the write toggles
RARE_USER = "rare-user"                 # three audit rows, 25, 12 and 2 days old
N_USERS = 200
BACKENDS = (("east", 1), ("west", 2), ("eu", 3))
LINE_CAP_S = 4.0                        # a line stops after this long once it has MIN_CALLS calls
MIN_CALLS = 3
WARM_CALLS = 1                          # per line, after one warm-up pass over every line
DEFAULT_BUDGET = 2000000                # limits.default_token_budget (tokens per day)
PROFILES = 4096                         # distinct answers (tokens, latency, bodies) per operation and model
RESULTS = os.environ.get("BENCH_ADMIN_RESULTS") or os.path.join(BENCH_DIR, "results", "latest-admin.json")

log = bench.log


# --- seeding -------------------------------------------------------------------
#
# Made for speed: on a 2-CPU machine one executemany of 1,000,000 audit rows
# built in Python takes about a minute, so Python makes only the small lookup
# tables (users, the answers, the failure patterns; executemany) and SQLite
# makes the rows from them in one INSERT ... SELECT, the rollups in a few
# GROUP BYs over a compact per-request table. Everything in one transaction.

SLOTS = 10000       # weighted choices: a value per slot, the slot random
VARIANTS = 64       # failure patterns per kind of failure and primary backend

# What one request ended as, and how often (in 1/10,000; they add up to SLOTS):
# status, http_status, error_code. The attempts are made by failure_attempts().
OUTCOMES = [
    # kind                 weight  status     http  error_code
    ("ok",                  9400, "success", 200, None),
    ("ok_failover",           90, "success", 200, None),    # 2 attempts: 500 or 429, then ok
    ("ok_failover3",          10, "success", 200, None),    # 3 attempts
    ("err_backend3",          80, "error",   502, "backend_error"),      # every backend failed
    ("err_deadline",          90, "error",   504, "deadline_exceeded"),  # a hang until the deadline
    ("err_deadline2",         20, "error",   504, "deadline_exceeded"),  # 500 or 429 first, then a hang
    ("err_unavailable",       80, "error",   503, "backend_unavailable"),  # every breaker open: no attempt
    ("err_client_closed",     30, "error",   499, "client_closed_request"),
    ("ref_rate",             110, "refused", 429, "rate_limit_exceeded"),
    ("ref_tpm",               30, "refused", 429, "tokens_rate_limit_exceeded"),
    ("ref_budget",            40, "refused", 403, "budget_exceeded"),
    ("ref_too_long",          10, "refused", 400, "content_too_long"),
    ("ref_invalid",           10, "refused", 400, "invalid_value"),
]
ERROR_TEXT = {
    "backend_error": "The model backends failed after 3 attempt(s); last: HTTP 500 from backend.",
    "deadline_exceeded": "The request deadline (120 s) passed before a backend answered.",
    "backend_unavailable": "No backend can take the request now (circuit breakers open); retry later.",
    "client_closed_request": "The client closed the connection before the answer was complete.",
    "rate_limit_exceeded": "Rate limit of requests per window reached; retry after the time in Retry-After.",
    "tokens_rate_limit_exceeded": "Tokens-per-minute limit reached; retry after the time in Retry-After.",
    "budget_exceeded": "Token budget exhausted for this day; it resets at the start of the next period.",
    "content_too_long": "A message is longer than validation.max_content_chars.",
    "invalid_value": "'temperature' must be a number between 0 and 2.",
}
TIMEOUT_ERR = "Operation timed out after 30001 milliseconds with 0 bytes received"

# operation, model, weight in 1/100: chat through both routes and embeddings.
OPERATIONS = [("chat.completions", "gpt-4o", 50), ("chat.completions", "gpt-4o-mini", 25),
              ("chat", "gpt-4o", 15), ("embeddings", "text-embedding-3-small", 10)]
PRIMARY_WEIGHTS = (62, 30, 8)       # in 1/100: where a request's deployment lives first

CHAT_BODY = ('{"messages":[{"role":"system","content":"You are a helpful assistant for Contoso customer '
             'support. Answer briefly."},{"role":"user","content":"Ticket %d: how do I reset the password of '
             'my account and keep my saved settings?"}],"max_tokens":%d,"temperature":0.7%s}')
CHAT_ANSWER = ('{"id":"chatcmpl-%x","object":"chat.completion","created":%d,"model":"%s","choices":[{"index":0,'
               '"finish_reason":"stop","message":{"role":"assistant","content":"Open Settings, choose Security, '
               'then Reset password. Your saved settings are kept; you will be asked to sign in again on your '
               'other devices."},"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}],'
               '"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d},'
               '"system_fingerprint":"fp_5f20662549"}')
EMBED_BODY = '{"input":"Ticket %d: password reset and saved settings","model":"text-embedding-3-small"}'
# A real answer holds 1,536 floats; the stored one is cut to eight here.
EMBED_ANSWER = ('{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.0023,-0.0091,0.0154,'
                '-0.0047,0.0311,-0.0128,0.0066,-0.0203]}],"model":"text-embedding-3-small",'
                '"usage":{"prompt_tokens":%d,"total_tokens":%d}}')


def latency_bucket_ms(ms):
    """metrics.c's latency_bucket_ms: the upper bound of a latency's bucket,
    three significant digits (the same double arithmetic as the C)."""
    if not ms > 0.01:
        return 0.01
    scale = 1.0
    while ms >= 1000 * scale:
        scale *= 10
    while ms < 100 * scale:
        scale /= 10
    return math.ceil(ms / scale) * scale


def attempt_ok(status, error):
    """metrics.c's attempt_ok: did this call to a backend work?"""
    return 200 <= status < 500 and status != 429 and (not error or 400 <= status < 429)


def model_latency(rng, embed):
    """A model's answer time, ms: ~0.9 s for a chat with a long tail, ~75 ms
    for an embedding; one decimal, as attempts_detail shows it."""
    return round(20 + rng.lognormvariate(4.0, 0.5), 1) if embed else round(150 + rng.lognormvariate(6.6, 0.55), 1)


def slots(weights):
    """SLOTS values (indexes into weights) in proportion to weights: a random
    slot is a weighted choice SQLite can make with one lookup."""
    total = float(sum(weights))
    out, acc, k = [], weights[0], 0
    for s in range(SLOTS):
        while (s + 0.5) / SLOTS * total > acc and k < len(weights) - 1:
            k += 1
            acc += weights[k]
        out.append(k)
    return out


def user_list(now_ms):
    """The seeded users: (user_id, roles, requests_per_window, window_s,
    tokens_per_minute, token_budget, budget_period, disabled, created_ms),
    most on the configuration's defaults, some with their own limits, and the
    one with only three audit rows last."""
    users = []
    for i in range(1, N_USERS + 1):
        custom = i % 5 == 0
        period = "month" if i % 25 == 0 else ("day" if custom else None)
        users.append(("user%03d" % i, "AI.User" if i % 40 else "AI.User,AI.Admin",
                      1000 if custom else None, 60 if custom else None, 200000 if i % 10 == 0 else None,
                      (50000000 if period == "month" else 4000000) if custom else None, period,
                      1 if i % 67 == 0 else 0, now_ms - (60 + i % 30) * DAY_MS))
    users.append((RARE_USER, "AI.User", None, None, None, None, None, 0, now_ms - 40 * DAY_MS))
    return users


def answer_rows(rng, now_s):
    """PROFILES answers per operation and model, one picked at random per
    request: (op, pick, operation, model, prompt, completion, total, reserved
    tokens, the model's latency ms, its bucket, request body, response body,
    stream)."""
    out = []
    for op, (operation, model, _) in enumerate(OPERATIONS):
        embed = operation == "embeddings"
        for k in range(PROFILES):
            lat = model_latency(rng, embed)
            if embed:
                prompt, completion, max_tokens, stream = 8 + int(rng.random() * 300), 0, 0, 0
                req, resp = EMBED_BODY % k, EMBED_ANSWER % (prompt, prompt)
            else:
                prompt = 20 + int(rng.expovariate(1 / 400.0))
                completion = 9 + int(rng.expovariate(1 / 180.0))
                max_tokens = 100 + int(rng.random() * 900)
                stream = 1 if operation == "chat.completions" and k % 8 == 0 else 0
                req = CHAT_BODY % (k, max_tokens, ',"stream":true' if stream else "")
                resp = CHAT_ANSWER % (rng.getrandbits(40), now_s - k, model, prompt, completion, prompt + completion)
            out.append((op, k, operation, model, prompt, completion, prompt + completion, prompt + max_tokens + 16,
                        lat, latency_bucket_ms(lat), req, resp, stream))
    return out


def failure_attempts(rng, kind, primary):
    """The attempts of a request that did not go through on its first call,
    as aigw records them: [(backend, status, latency ms, error)]."""
    names = [b[0] for b in BACKENDS]
    if kind == "err_deadline":
        return [(names[primary], 0, 30001.0, TIMEOUT_ERR)]
    if kind == "err_client_closed":
        return [(names[primary], 200, model_latency(rng, False), "client disconnected")]
    n = {"ok_failover": 2, "ok_failover3": 3, "err_backend3": 3, "err_deadline2": 2}.get(kind, 0)
    out = []
    for a in range(n):
        b = names[(primary + a) % len(names)]
        if a == n - 1 and kind.startswith("ok"):
            out.append((b, 200, model_latency(rng, False), None))
        elif a == n - 1 and kind == "err_deadline2":
            out.append((b, 0, 30001.0, TIMEOUT_ERR))
        elif rng.random() < 0.5:
            out.append((b, 429, round(20 + rng.random() * 60, 1), "throttled (429)"))
        else:
            out.append((b, 500, round(80 + rng.random() * 400, 1), "HTTP 500 from backend"))
    return out


def attempts_json(attempts):
    """audit.c's attempts_json."""
    return "[" + ",".join('{"backend":"%s","status":%d,"latency_ms":%.1f%s}' % (
        b, st, ms, ',"error":"%s"' % err if err else "") for b, st, ms, err in attempts) + "]"


# The tables SQLite makes the rows from (TEMP: gone with the connection).
LOOKUP_SQL = """
CREATE TEMP TABLE seed_slot(slot INTEGER PRIMARY KEY, uid INTEGER);
CREATE TEMP TABLE seed_user(uid INTEGER PRIMARY KEY, user_id TEXT, ip TEXT, period TEXT);
CREATE TEMP TABLE seed_kind(slot INTEGER PRIMARY KEY, kind INTEGER);
CREATE TEMP TABLE seed_op(slot INTEGER PRIMARY KEY, op INTEGER);
CREATE TEMP TABLE seed_primary(slot INTEGER PRIMARY KEY, backend INTEGER);
CREATE TEMP TABLE seed_backend(backend INTEGER PRIMARY KEY, name TEXT);
CREATE TEMP TABLE seed_outcome(kind INTEGER PRIMARY KEY, first_call_ok INTEGER, status TEXT, http_status INTEGER,
                               error_code TEXT, error TEXT);
CREATE TEMP TABLE seed_answer(op INTEGER, pick INTEGER, operation TEXT, model TEXT, prompt INTEGER,
                              completion INTEGER, total INTEGER, reserved INTEGER, latency_ms REAL, bucket_ms REAL,
                              request_body TEXT, response_body TEXT, stream INTEGER,
                              PRIMARY KEY (op, pick)) WITHOUT ROWID;
CREATE TEMP TABLE seed_failure(kind INTEGER, backend INTEGER, variant INTEGER, attempts INTEGER, detail TEXT,
                               last_backend TEXT, latency_ms REAL,
                               PRIMARY KEY (kind, backend, variant)) WITHOUT ROWID;
CREATE TEMP TABLE seed_attempt(kind INTEGER, backend INTEGER, variant INTEGER, i INTEGER, name TEXT,
                               bucket_ms REAL, failed INTEGER, answered INTEGER, failed_over INTEGER);
CREATE INDEX temp.seed_attempt_of ON seed_attempt(kind, backend, variant);
"""

# One row per request and what the rollups need of it: r is 63 random bits
# whose digits (in mixed radix) pick the user, the kind of outcome, the
# operation, the answer, the primary backend and the failure pattern. Rows
# :rare_1..3 are the rare user's (slot SLOTS, never drawn). tokens: prompt << 20 |
# completion of a request that succeeded. OUTCOMES are in the order success,
# error, refused, "ok" (kind 0) first.
FACT_SQL = """
CREATE TEMP TABLE seed_fact(i INTEGER PRIMARY KEY, ts INTEGER, r INTEGER, uid INTEGER, kind INTEGER,
                            op INTEGER, pick INTEGER, backend INTEGER, variant INTEGER, tokens INTEGER,
                            bucket_ms REAL);
INSERT INTO seed_fact
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < :rows - 1),
g AS (SELECT i, :t0 + i * :step + (random() & 9223372036854775807) % :step AS ts,
             random() & 9223372036854775807 AS r FROM n)
SELECT g.i, g.ts, g.r, s.uid,
       k.kind, o.op, a.pick, p.backend, g.r / 10000000000000000 % :variants,
       CASE WHEN k.kind <= :last_success THEN a.prompt << 20 | a.completion ELSE 0 END, a.bucket_ms
FROM g
CROSS JOIN seed_slot s ON s.slot = CASE WHEN g.i IN (:rare_1, :rare_2, :rare_3) THEN :slots ELSE g.r % :slots END
CROSS JOIN seed_kind k ON k.slot = g.r / :slots % :slots
CROSS JOIN seed_op o ON o.slot = g.r / 100000000 % 100
CROSS JOIN seed_primary p ON p.slot = g.r / 100000000000000 % 100
CROSS JOIN seed_answer a ON a.op = o.op AND a.pick = g.r / 10000000000 % :profiles;
"""

# Every audit column of a request but its ids, as aigw would have written it.
ROW_VIEW_SQL = """
CREATE TEMP VIEW seed_row AS
SELECT f.i, f.ts, f.r, u.user_id, u.ip, a.operation, a.model,
       CASE WHEN f.kind = 0 THEN b.name ELSE x.last_backend END AS backend,
       CASE WHEN f.kind = 0 THEN 1 ELSE coalesce(x.attempts, 0) END AS attempts,
       CASE WHEN f.kind = 0 THEN printf('[{"backend":"%s","status":200,"latency_ms":%.1f}]', b.name, a.latency_ms)
            ELSE x.detail END AS attempts_detail,
       a.stream,
       CASE WHEN o.status = 'refused' THEN 0 ELSE a.reserved END AS reserved_tokens,
       CASE WHEN o.status = 'refused' THEN NULL
            WHEN u.period = 'day' THEN (f.ts - f.ts % 86400000) / 1000
            WHEN u.period = 'month' THEN CAST(strftime('%s', f.ts / 1000, 'unixepoch', 'start of month') AS INTEGER)
            ELSE 0 END AS budget_period_start,
       f.tokens >> 20 AS prompt_tokens, f.tokens & 1048575 AS completion_tokens,
       (f.tokens >> 20) + (f.tokens & 1048575) AS total_tokens,
       CASE WHEN f.kind = 0 THEN a.latency_ms + 1.5 + f.r % 300 / 100.0
            WHEN x.attempts IS NOT NULL THEN x.latency_ms + 1.5 + f.r % 300 / 100.0
            ELSE 0.1 + f.r % 400 / 1000.0 END AS latency_ms,
       o.status, o.http_status, o.error_code, o.error, a.request_body,
       CASE WHEN o.status = 'success' THEN a.response_body END AS response_body
FROM seed_fact f
CROSS JOIN seed_user u ON u.uid = f.uid
CROSS JOIN seed_outcome o ON o.kind = f.kind
CROSS JOIN seed_answer a ON a.op = f.op AND a.pick = f.pick
CROSS JOIN seed_backend b ON b.backend = f.backend
LEFT JOIN seed_failure x ON x.kind = f.kind AND x.backend = f.backend AND x.variant = f.variant;
"""

# Time-ordered UUIDv7 request ids (48-bit ms, version 7, variant 10) and
# W3C trace ids, as the gateway makes them; rows in time order, as written.
AUDIT_SQL = """
INSERT INTO audit_log(request_id, ts_ms, user_id, operation, model, deployment, backend, attempts,
                      attempts_detail, stream, reserved_tokens, budget_period_start, prompt_tokens,
                      completion_tokens, total_tokens, latency_ms, status, http_status, error_code, error,
                      client_ip, trace_id, request_body, response_body, completed_ms)
SELECT printf('%08x-%04x-7%03x-%04x-%012x', ts >> 16, ts & 65535, random() & 4095,
              32768 | (random() & 16383), random() & 281474976710655),
       ts, user_id, operation, model, CASE WHEN backend IS NULL THEN model ELSE model || '-' || backend END,
       backend, attempts, attempts_detail, stream, reserved_tokens, budget_period_start, prompt_tokens,
       completion_tokens, total_tokens, latency_ms, status, http_status, error_code, error, ip,
       printf('%016x%016x', random(), random()), request_body, response_body,
       ts + CAST(latency_ms AS INTEGER) + 1
FROM seed_row ORDER BY i;
"""

# The rollups, as metrics_collect() and the settlement add to them: first
# per hour and user and per hour, backend and latency bucket (one pass over
# the requests each), then summed into aigw's tables.
ROLLUP_SQL = """
CREATE TEMP TABLE seed_usage AS
SELECT ts - ts % 3600000 AS hour_ms, uid, count(*) AS requests, sum(kind <= :last_success) AS succeeded,
       sum(kind > :last_success AND kind <= :last_error) AS failed, sum(kind > :last_error) AS refused,
       sum(tokens >> 20) AS prompt_tokens, sum(tokens & 1048575) AS completion_tokens
FROM seed_fact GROUP BY hour_ms, uid;
INSERT INTO usage_daily(day_ms, user_id, requests, succeeded, failed, refused, prompt_tokens, completion_tokens,
                        total_tokens)
SELECT hour_ms - hour_ms % 86400000 AS day_ms, u.user_id, sum(requests), sum(succeeded), sum(failed),
       sum(refused), sum(prompt_tokens), sum(completion_tokens), sum(prompt_tokens + completion_tokens)
FROM seed_usage JOIN seed_user u USING (uid) GROUP BY day_ms, u.user_id;
INSERT INTO budget_usage(user_id, period_start, used, reserved)
SELECT u.user_id,
       CASE u.period WHEN 'day' THEN (hour_ms - hour_ms % 86400000) / 1000
                     WHEN 'month' THEN CAST(strftime('%s', hour_ms / 1000, 'unixepoch', 'start of month') AS INTEGER)
                     ELSE 0 END AS period_start,
       sum(prompt_tokens + completion_tokens), 0
FROM seed_usage JOIN seed_user u USING (uid)
WHERE requests > refused GROUP BY u.user_id, period_start;
CREATE TEMP TABLE seed_calls AS
SELECT hour_ms, name, bucket_ms, count(*) AS calls, sum(failed) AS failed, sum(answered) AS answered,
       sum(failed_over) AS failed_over
FROM (SELECT f.ts - f.ts % 3600000 AS hour_ms, b.name, f.bucket_ms, 0 AS failed, 1 AS answered, 0 AS failed_over
      FROM seed_fact f JOIN seed_backend b ON b.backend = f.backend WHERE f.kind = 0
      UNION ALL
      SELECT f.ts - f.ts % 3600000, t.name, t.bucket_ms, t.failed, t.answered, t.failed_over
      FROM seed_fact f JOIN seed_attempt t ON t.kind = f.kind AND t.backend = f.backend AND t.variant = f.variant
      WHERE f.kind <> 0)
GROUP BY hour_ms, name, bucket_ms;
INSERT INTO backend_hourly(hour_ms, backend, attempts, failures, answered, failed_over)
SELECT hour_ms, name, sum(calls), sum(failed), sum(answered), sum(failed_over) FROM seed_calls
GROUP BY hour_ms, name;
INSERT INTO latency_hourly(hour_ms, backend, bucket_ms, calls)
SELECT hour_ms, name, bucket_ms, calls FROM seed_calls ORDER BY hour_ms, name, bucket_ms;
"""

# sql/006_traffic.sql's usage_hourly, where the schema has it.
TRAFFIC_SQL = """
INSERT INTO usage_hourly(hour_ms, requests, succeeded, failed, refused, prompt_tokens, completion_tokens,
                         total_tokens)
SELECT hour_ms, sum(requests), sum(succeeded), sum(failed), sum(refused), sum(prompt_tokens),
       sum(completion_tokens), sum(prompt_tokens + completion_tokens)
FROM seed_usage GROUP BY hour_ms;
"""


def run_script(con, script, params=None):
    """Runs the ;-separated statements of script (no ; inside a statement),
    with named parameters."""
    for stmt in script.split(";"):
        if stmt.strip():
            con.execute(stmt, params or {})


def seed(db_path, rows, now_ms, seed_value=20261202):
    """Fills a migrated database with rows audit rows over the 30 days before
    now_ms and what aigw would have written with them: users and keys, the
    breakers, and the rollups (usage_daily, usage_hourly and budget_usage per
    request, backend_hourly and latency_hourly per attempt, by metrics.c's
    rules). One transaction, synchronous off and no rollback journal for the
    seeding only (the file is put back in WAL mode after). Returns what the
    timing needs (the busy user, a request id, ...), the counts and the
    seconds."""
    rng = random.Random(seed_value)
    t_start = time.time()
    con = sqlite3.connect(db_path, isolation_level=None)
    for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-400000", "temp_store=MEMORY"):
        con.execute("PRAGMA " + pragma)
    con.execute("BEGIN")

    # --- users, keys, breakers ----------------------------------------------
    users = user_list(now_ms)
    con.executemany("INSERT INTO users(user_id, roles, requests_per_window, window_s, tokens_per_minute,"
                    " token_budget, budget_period, disabled, created_ms) VALUES (?,?,?,?,?,?,?,?,?)", users)
    # One key per user, a second for every fourth; some expiring, some revoked.
    keys = []
    for i, u in enumerate(users):
        for k in range(2 if i % 4 == 0 else 1):
            created = u[8] + (k * 20 + i % 7) * DAY_MS
            keys.append(("%012x" % rng.getrandbits(48), rng.randbytes(32), u[0], created,
                         created + 90 * DAY_MS if i % 3 == 0 else None,
                         created + 10 * DAY_MS if k == 0 and i % 4 == 0 else None))
    con.executemany("INSERT INTO api_keys(key_id, key_hash, user_id, created_ms, expires_ms, revoked_ms)"
                    " VALUES (?,?,?,?,?,?)", keys)
    con.executemany("INSERT INTO backend_state(name, state, failures, last_error, updated_ms) VALUES (?,?,?,?,?)"
                    " ON CONFLICT(name) DO NOTHING",
                    [("east", "closed", 0, None, now_ms - 3600000),
                     ("west", "closed", 1, "HTTP 500 from backend", now_ms - 120000),
                     ("eu", "closed", 2, TIMEOUT_ERR, now_ms - 600000)])

    # --- the lookup tables ----------------------------------------------------
    run_script(con, LOOKUP_SQL)
    active = users[:-1]                                     # all but the rare user
    weights = [1.0 / (k + 1) ** 0.8 for k in range(len(active))]   # a few busy users, a long tail
    ip = lambda n: "10.%d.%d.%d" % (1 + n // 250, n % 250, 10 + n % 7)   # noqa: E731
    con.executemany("INSERT INTO seed_user VALUES (?,?,?,?)",
                    [(k, u[0], ip(k), u[6] or "day") for k, u in enumerate(users)])
    con.executemany("INSERT INTO seed_slot VALUES (?,?)",
                    list(enumerate(slots(weights))) + [(SLOTS, len(users) - 1)])   # the rare user: no slot drawn
    con.executemany("INSERT INTO seed_kind VALUES (?,?)", enumerate(slots([o[1] for o in OUTCOMES])))
    con.executemany("INSERT INTO seed_op VALUES (?,?)",
                    [(s, k) for s, k in enumerate(slots([o[2] for o in OPERATIONS])) if s < 100])
    con.executemany("INSERT INTO seed_primary VALUES (?,?)",
                    [(s, k) for s, k in enumerate(slots(PRIMARY_WEIGHTS)) if s < 100])
    con.executemany("INSERT INTO seed_backend VALUES (?,?)", enumerate(b[0] for b in BACKENDS))
    con.executemany("INSERT INTO seed_outcome VALUES (?,?,?,?,?,?)",
                    [(k, o[0] == "ok", o[2], o[3], o[4], ERROR_TEXT.get(o[4])) for k, o in enumerate(OUTCOMES)])
    con.executemany("INSERT INTO seed_answer VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", answer_rows(rng, now_ms // 1000))
    failures, calls = [], []
    for k, o in enumerate(OUTCOMES):
        for primary in range(len(BACKENDS)):
            for v in range(VARIANTS):
                att = failure_attempts(rng, o[0], primary) if o[0] != "ok" else []
                if not att:
                    continue
                failures.append((k, primary, v, len(att), attempts_json(att), att[-1][0], sum(a[2] for a in att)))
                for i, (b, st, ms, err) in enumerate(att):
                    ok = attempt_ok(st, err)
                    answered = i == len(att) - 1 and ok
                    calls.append((k, primary, v, i, b, latency_bucket_ms(ms), not ok, answered, answered and i > 0))
    con.executemany("INSERT INTO seed_failure VALUES (?,?,?,?,?,?,?)", failures)
    con.executemany("INSERT INTO seed_attempt VALUES (?,?,?,?,?,?,?,?,?)", calls)

    # --- the requests, the audit rows, the rollups ------------------------------
    span = SPAN_DAYS * DAY_MS
    step = span // rows
    rare = [int(rows * (SPAN_DAYS - d) / SPAN_DAYS) for d in (25, 12, 2)]
    statuses = [o[2] for o in OUTCOMES]
    assert OUTCOMES[0][0] == "ok" and statuses == sorted(statuses, key=("success", "error", "refused").index)
    kinds = {"last_success": statuses.count("success") - 1,
             "last_error": statuses.count("success") + statuses.count("error") - 1}
    run_script(con, FACT_SQL, dict(kinds, rows=rows, t0=now_ms - step * rows, step=step, slots=SLOTS,
                                   profiles=PROFILES, variants=VARIANTS, rare_1=rare[0], rare_2=rare[1],
                                   rare_3=rare[2]))
    run_script(con, ROW_VIEW_SQL)
    t = time.time()
    run_script(con, ROLLUP_SQL, kinds)
    traffic_table = has_table(con, "usage_hourly")
    if traffic_table:
        run_script(con, TRAFFIC_SQL)
    t_rollup = time.time() - t
    first_id = con.execute("SELECT coalesce(max(id), 0) + 1 FROM audit_log").fetchone()[0]
    t = time.time()
    run_script(con, AUDIT_SQL)
    t_audit = time.time() - t
    busy = active[0][0]                                     # the heaviest weight
    lookup_id = con.execute("SELECT request_id FROM audit_log WHERE id = ?", (first_id + rows // 2,)).fetchone()[0]
    busy_rows = con.execute("SELECT sum(requests) FROM seed_usage JOIN seed_user USING (uid) WHERE user_id = ?",
                            (busy,)).fetchone()[0]
    counts = {t: con.execute("SELECT count(*) FROM " + t).fetchone()[0]
              for t in ("usage_daily", "usage_hourly", "backend_hourly", "latency_hourly", "budget_usage")
              if t != "usage_hourly" or traffic_table}
    counts["failovers"] = con.execute("SELECT count(*) FROM audit_log WHERE attempts > 1").fetchone()[0]
    con.execute("COMMIT")
    con.execute("PRAGMA journal_mode=WAL")
    con.close()
    return {"rows": rows, "seconds": round(time.time() - t_start, 1), "audit_seconds": round(t_audit, 1),
            "rollup_seconds": round(t_rollup, 1), "users": len(users), "keys": len(keys),
            "busy_user": busy, "busy_user_rows": busy_rows, "rare_user": RARE_USER, "rare_user_rows": 3,
            "lookup_request_id": lookup_id, "tables": counts, "traffic_table": traffic_table,
            "db_bytes": os.path.getsize(db_path)}


def has_table(con, name):
    return con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


# --- the gateway -----------------------------------------------------------------

class AdminGateway:
    """aigw serve behind nginx on a seeded database (bench.py's aigw-nginx:
    the shipped site config, a unix socket); the admin's key in self.key."""

    name = "admin"

    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "admin")
        os.makedirs(self.dir, exist_ok=True)
        self.db_path = os.path.join(self.dir, "aigw.db")
        self.config_path = os.path.join(self.dir, "aigw.json")
        key_file = os.path.join(self.dir, "backend.key")
        with open(key_file, "w") as f:
            f.write("bench-backend-key\n")
        os.chmod(key_file, 0o600)
        # Backends nobody calls: no model traffic is sent (nothing listens there).
        dead = "http://127.0.0.1:%d" % bench.free_port()
        backends = [{"name": n, "type": "azure", "url": dead, "api_key": "file:" + key_file, "priority": p,
                     "deployments": {m: "%s-%s" % (m, n) for m in ("gpt-4o", "gpt-4o-mini", "text-embedding-3-small")},
                     "timeout_s": 30} for n, p in BACKENDS]
        self.config = {
            "environment": "bench",
            "database": {"path": self.db_path},
            "auth": {"enabled": True, "api_keys": True},
            "limits": {"requests_per_window": 600, "window_s": 60, "default_token_budget": DEFAULT_BUDGET,
                       "budget_period": "day"},
            "backends": backends,
            "audit": {"log_bodies": "redacted"},
        }
        with open(self.config_path, "w") as f:
            json.dump(self.config, f, indent=2)
        self.key = None
        self.port = None
        self.procs = []

    def cli(self, *args):
        r = subprocess.run([bench.AIGW_BIN, "--config", self.config_path, *args],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError("aigw %s: %s" % (" ".join(args), (r.stderr or r.stdout).strip()))
        return r.stdout

    def prepare(self):
        """The schema, the admin and its key, the user the write toggles."""
        self.cli("db", "migrate")
        self.cli("user", "add", ADMIN, "--roles", "AI.Admin")
        self.cli("user", "add", PATCH_USER, "--roles", "AI.User")
        keys = [w for w in self.cli("key", "create", ADMIN).split() if w.startswith("aigw_")]
        if not keys:
            raise RuntimeError("aigw key create printed no key")
        self.key = keys[0]

    def start(self):
        ngx, serve, self.port = bench.start_nginx_serve(self)
        self.procs = [ngx, serve]
        bench.wait_healthy(self.port)

    def stop(self):
        for p in reversed(self.procs):
            bench.stop(p)
        self.procs = []


# --- timing ------------------------------------------------------------------------

class Client:
    """One kept-alive HTTP connection to nginx, as a browser holds one."""

    def __init__(self, port, key):
        self.port = port
        self.headers = {"Authorization": "Bearer " + key}
        self.conn = None

    def call(self, method, path, body=None):
        """(status, body bytes, wall-clock ms)"""
        data = json.dumps(body).encode() if body is not None else None
        hdrs = dict(self.headers, **({"Content-Type": "application/json"} if data is not None else {}))
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                self.conn.connect()
            t = time.perf_counter()
            try:
                self.conn.request(method, path, body=data, headers=hdrs)
                r = self.conn.getresponse()
                payload = r.read()
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
                continue        # the server closed the kept-alive connection: once more on a new one
            ms = (time.perf_counter() - t) * 1000
            if r.getheader("Connection", "").lower() == "close":
                self.conn.close()
                self.conn = None
            return r.status, payload, ms


def count_rows(kind, payload):
    """The rows an answer holds (None if it is not the JSON expected)."""
    if kind == "html":
        return None
    try:
        j = json.loads(payload)
    except ValueError:
        return None
    for k in ("rows", "users", "keys", "backends"):
        if isinstance(j.get(k), list):
            return len(j[k])
    return 1 if kind == "one" and "user_id" in j else None


def endpoint_lines(info):
    """(label, since, method, path, body maker or None, kind) per measured line."""
    busy, rare, rid = info["busy_user"], info["rare_user"], info["lookup_request_id"]
    lines = [("GET /admin/api/me", None, "GET", "/admin/api/me", None, "one")]
    for name in REPORTS:
        for s in SINCES:
            lines.append(("GET reports/%s" % name, s, "GET", "/admin/api/reports/%s?since=%d" % (name, s), None, "json"))
    for what in ("users", "keys", "breakers"):
        lines.append(("GET /admin/api/%s" % what, None, "GET", "/admin/api/%s" % what, None, "json"))
    for s in SINCES:
        lines.append(("GET audit (no filter)", s, "GET", "/admin/api/audit?since=%d&limit=50" % s, None, "json"))
        lines.append(("GET audit user=%s (busy)" % busy, s, "GET",
                      "/admin/api/audit?since=%d&user=%s&limit=50" % (s, busy), None, "json"))
        lines.append(("GET audit user=%s (3 rows)" % rare, s, "GET",
                      "/admin/api/audit?since=%d&user=%s&limit=50" % (s, rare), None, "json"))
    lines.append(("GET audit request_id=<15 days old>", None, "GET",
                  "/admin/api/audit?request_id=%s" % rid, None, "json"))
    flag = [False]

    def toggle():
        flag[0] = not flag[0]
        return {"user_id": PATCH_USER, "disabled": flag[0]}
    lines.append(("PATCH /admin/api/users (disabled)", None, "PATCH", "/admin/api/users", toggle, "one"))
    lines.append(("GET /dashboard", None, "GET", "/dashboard", None, "html"))
    return lines


def measure(client, line, calls, deadline):
    """Times one line: WARM_CALLS calls, then calls more (fewer once the
    line has taken LINE_CAP_S or the section's deadline has passed, never
    fewer than MIN_CALLS). The result's "error" says the first answer that
    was not 200; the line stops there."""
    label, since, method, path, body, kind = line
    out = {"endpoint": label, "since": since, "method": method, "path": path}
    times = []
    rows = None
    n_bytes = 0
    t_line = time.time()
    for i in range(WARM_CALLS + calls):
        st, payload, ms = client.call(method, path, body() if body else None)
        if st != 200:
            out["error"] = "HTTP %d: %s" % (st, payload[:200].decode(errors="replace"))
            return out
        if i >= WARM_CALLS:
            times.append(ms)
        rows, n_bytes = count_rows(kind, payload), len(payload)
        spent = time.time() - t_line
        if len(times) >= MIN_CALLS and (spent > LINE_CAP_S or time.time() > deadline):
            break
    times.sort()
    out.update({"calls": len(times), "median_ms": round(statistics.median(times), 2),
                "p95_ms": round(times[min(len(times) - 1, int(math.ceil(0.95 * len(times))) - 1)], 2),
                "max_ms": round(times[-1], 2), "rows": rows, "bytes": n_bytes,
                "target_met": times[-1] <= TARGET_MS})
    return out


def expectations(res, info):
    """Answers that cannot be right for the seeded data (warnings only: the
    figures are what this measures)."""
    warn = []
    for r in res:
        if "error" in r:
            continue
        p = r["path"]
        if "request_id=" in p and r["rows"] != 1:
            warn.append("%s: %s rows, not 1" % (r["endpoint"], r["rows"]))
        if "user=%s" % info["rare_user"] in p:
            want = 3 if r["since"] == SINCES[-1] else 0
            if r["rows"] != want:
                warn.append("%s since %s: %s rows, not %d" % (r["endpoint"], r["since"], r["rows"], want))
        if "/reports/" in p and r["since"] == SINCES[-1] and not r["rows"]:
            warn.append("%s since %s: no rows" % (r["endpoint"], r["since"]))
    return warn


def fmt_since(s):
    return "-" if s is None else {3600: "1h", 86400: "1d", 2592000: "30d"}.get(s, "%ds" % s)


def print_table(out):
    sd = out["seed"]
    print()
    print("admin API on %d audit rows (%.2f GB database; seeded in %.1f s: audit rows %.1f s, rollups %.1f s; "
          "aigw serve, %d workers, behind nginx; sequential calls on one kept-alive connection; "
          "load average %s at the start, %s at the end)" % (
              sd["rows"], sd["db_bytes"] / 1e9, sd["seconds"], sd["audit_seconds"], sd["rollup_seconds"],
              out["workers"], " ".join(out["machine"]["loadavg_start"]),
              " ".join(out["machine"].get("loadavg_end", ["?"]))))
    print("rollups: %s" % ", ".join("%s %s" % (k, v) for k, v in sd["tables"].items() if v is not None))
    hdr = "%-44s %5s %9s %9s %9s %6s %7s  %s" % ("endpoint", "since", "median ms", "p95 ms", "max ms", "calls",
                                                  "rows", "<= %.0f ms" % TARGET_MS)
    print(hdr)
    print("-" * len(hdr))
    for r in out["lines"]:
        if "error" in r:
            print("%-44s %5s  FAILED: %s" % (r["endpoint"], fmt_since(r["since"]), r["error"]))
            continue
        verdict = "met" if r["target_met"] else ("MISSED (max only)" if r["median_ms"] <= TARGET_MS else "MISSED")
        rows = "-" if r["rows"] is None else str(r["rows"])
        if r["endpoint"] == "GET /dashboard":
            rows = "%dB" % r["bytes"]
        print("%-44s %5s %9.1f %9.1f %9.1f %6d %7s  %s" % (
            r["endpoint"], fmt_since(r["since"]), r["median_ms"], r["p95_ms"], r["max_ms"], r["calls"], rows,
            verdict))
    ok = [r for r in out["lines"] if "error" not in r]
    if ok:
        w = max(ok, key=lambda r: r["max_ms"])
        missed = [r for r in ok if not r["target_met"]]
        print("worst: %s since %s: median %.1f ms, max %.1f ms (%s); %d of %d lines over %.0f ms" % (
            w["endpoint"], fmt_since(w["since"]), w["median_ms"], w["max_ms"],
            "target met" if w["target_met"] else "MISSED", len(missed), len(ok), TARGET_MS))
    for wmsg in out.get("warnings", []):
        print("warning: unexpected answer: %s" % wmsg)
    failed = [r for r in out["lines"] if "error" in r]
    if failed:
        print("%d endpoint(s) did not answer 200" % len(failed))
    print("results: %s" % RESULTS)


# --- main ----------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=int(os.environ.get("BENCH_ADMIN_ROWS", "1000000")),
                    help="audit rows to seed (default 1,000,000; BENCH_ADMIN_ROWS)")
    ap.add_argument("--calls", type=int, default=int(os.environ.get("BENCH_ADMIN_CALLS", "20")),
                    help="measured calls per line after the warm-up (default 20; BENCH_ADMIN_CALLS)")
    ap.add_argument("--budget", type=float, default=float(os.environ.get("BENCH_ADMIN_BUDGET", "150")),
                    help="seconds for the whole section; lines get fewer calls when it runs short (default 150)")
    args = ap.parse_args(argv)
    deadline = time.time() + args.budget
    own_work = bench.WORK is None
    if own_work:
        bench.WORK = tempfile.mkdtemp(prefix="aigw-bench-admin.", dir="/tmp")
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    out = {"machine": {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "nproc": os.cpu_count(),
                       "aigw_commit": bench.text_of(["git", "-C", bench.SRCDIR, "rev-parse", "--short", "HEAD"]),
                       "sqlite3_python": sqlite3.sqlite_version,
                       "loadavg_start": open("/proc/loadavg").read().split()[:3]},
           "target_ms": TARGET_MS, "workers": bench.WORKERS, "calls": args.calls}
    status = 0
    gw = None
    try:
        if not os.access(bench.AIGW_BIN, os.X_OK):
            raise RuntimeError("%s is not built (make aigw)" % bench.AIGW_BIN)
        gw = AdminGateway(bench.WORK)
        gw.prepare()
        log("admin: seeding %d audit rows into %s" % (args.rows, gw.db_path))
        now_ms = int(time.time() * 1000)
        info = seed(gw.db_path, args.rows, now_ms)
        t = time.time()
        os.sync()       # the file's dirty pages written back now, not during the measurement
        info["sync_seconds"] = round(time.time() - t, 1)
        out["seed"] = info
        log("admin: seeded in %.1f s (audit rows %.1f s, rollups %.1f s), %.2f GB, written back in %.1f s" % (
            info["seconds"], info["audit_seconds"], info["rollup_seconds"], info["db_bytes"] / 1e9,
            info["sync_seconds"]))
        if not info["traffic_table"]:
            log("admin: no usage_hourly table in this schema (sql/006_traffic.sql): the traffic report is empty")
        gw.start()
        log("admin: aigw serve + nginx on port %d" % gw.port)
        client = Client(gw.port, gw.key)
        st, payload, _ = client.call("GET", "/admin/api/me")
        if st != 200:
            raise RuntimeError("GET /admin/api/me answered %d (%s): is the admin API in this build?" % (
                st, payload[:200].decode(errors="replace")))
        lines = endpoint_lines(info)
        # One pass over everything first: every worker's statements and the
        # database's pages as a dashboard that has been open a while has them.
        for line in lines:
            client.call(line[2], line[3], line[4]() if line[4] else None)
        res = []
        for line in lines:
            r = measure(client, line, args.calls, deadline)
            res.append(r)
            if "error" in r:
                log("admin: %s answered %s" % (line[0], r["error"]))
        out["lines"] = res
        out["warnings"] = expectations(res, info)
        out["machine"]["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
        if any("error" in r for r in res):
            status = 1
    except Exception as e:  # noqa: BLE001 -- reported; the exit status says it failed
        import traceback
        traceback.print_exc()
        out["error"] = "%s: %s" % (type(e).__name__, e)
        status = 1
    finally:
        if gw is not None:
            gw.stop()
        bench.stop_all()
        os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
        with open(RESULTS, "w") as f:
            json.dump(out, f, indent=2)
        if os.environ.get("BENCH_KEEP") == "1":
            log("admin: kept %s" % bench.WORK)
        elif own_work:
            shutil.rmtree(bench.WORK, ignore_errors=True)
        elif gw is not None:
            shutil.rmtree(gw.dir, ignore_errors=True)   # the 1.5 GB database; run.sh removes the rest
    if "lines" in out:
        print_table(out)
    if "error" in out:
        print("bench admin: error: %s" % out["error"], file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
