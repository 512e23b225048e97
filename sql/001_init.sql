-- 001_init.sql - aigw's shared state: users, keys, limits, budgets, breakers, audit.
--
-- Every worker process opens this database; whatever one worker must know of
-- another's work lives here. Times are Unix milliseconds (INTEGER) unless named
-- otherwise. Applied by `aigw db migrate` and on first start.

CREATE TABLE users (
    user_id             TEXT PRIMARY KEY,
    roles               TEXT NOT NULL DEFAULT 'AI.User',  -- comma-separated
    requests_per_window INTEGER,                          -- NULL: the config's default
    window_s            INTEGER,
    tokens_per_minute   INTEGER,
    token_budget        INTEGER,
    budget_period       TEXT CHECK (budget_period IN ('day', 'month', 'total')),
    disabled            INTEGER NOT NULL DEFAULT 0,
    created_ms          INTEGER NOT NULL
);

CREATE TABLE api_keys (
    key_id       TEXT PRIMARY KEY,            -- the public prefix shown in listings
    key_hash     BLOB NOT NULL UNIQUE,        -- SHA-256 of the whole key; the key itself is never stored
    user_id      TEXT NOT NULL REFERENCES users(user_id),
    created_ms   INTEGER NOT NULL,
    expires_ms   INTEGER,
    revoked_ms   INTEGER
);

-- GCRA state: the theoretical arrival time per user and limit kind.
CREATE TABLE rate_state (
    user_id TEXT NOT NULL,
    kind    TEXT NOT NULL,                    -- 'requests' or 'tokens'
    tat_us  INTEGER NOT NULL,             -- microseconds
    PRIMARY KEY (user_id, kind)
) WITHOUT ROWID;

CREATE TABLE budget_usage (
    user_id      TEXT NOT NULL,
    period_start INTEGER NOT NULL,            -- Unix seconds of the period's start (0 for 'total')
    used         INTEGER NOT NULL DEFAULT 0,  -- settled tokens
    reserved     INTEGER NOT NULL DEFAULT 0,  -- tokens held by requests in flight
    PRIMARY KEY (user_id, period_start)
) WITHOUT ROWID;

CREATE TABLE backend_state (
    name               TEXT PRIMARY KEY,
    state              TEXT NOT NULL DEFAULT 'closed' CHECK (state IN ('closed', 'open', 'half_open')),
    failures           INTEGER NOT NULL DEFAULT 0,
    open_until_ms      INTEGER NOT NULL DEFAULT 0,
    half_open_inflight INTEGER NOT NULL DEFAULT 0,
    last_error         TEXT,
    updated_ms         INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE audit_log (
    id                INTEGER PRIMARY KEY,
    request_id        TEXT NOT NULL UNIQUE,
    ts_ms             INTEGER NOT NULL,
    timestamp         TEXT GENERATED ALWAYS AS (strftime('%Y-%m-%dT%H:%M:%fZ', ts_ms / 1000.0, 'unixepoch')) VIRTUAL,
    user_id           TEXT,
    end_user          TEXT,                   -- user_id from the body when different from the caller
    operation         TEXT NOT NULL,          -- route: chat, chat.completions, embeddings, ...
    model             TEXT,
    deployment        TEXT,
    backend           TEXT,                   -- the backend that answered (or was tried last)
    attempts          INTEGER NOT NULL DEFAULT 0,
    attempts_detail   TEXT,                   -- JSON array: [{backend, status, latency_ms, error}]
    stream            INTEGER NOT NULL DEFAULT 0,
    reserved_tokens   INTEGER NOT NULL DEFAULT 0,
    budget_period_start INTEGER,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    total_tokens      INTEGER NOT NULL DEFAULT 0,
    latency_ms        REAL,
    status            TEXT NOT NULL CHECK (status IN ('pending', 'success', 'error', 'refused', 'abandoned')),
    http_status       INTEGER,
    error_code        TEXT,
    error             TEXT,
    client_ip         TEXT,
    trace_id          TEXT,
    request_body      TEXT,
    response_body     TEXT,
    completed_ms      INTEGER
);
CREATE INDEX audit_log_ts ON audit_log(ts_ms);
CREATE INDEX audit_log_user_ts ON audit_log(user_id, ts_ms);
CREATE INDEX audit_log_pending ON audit_log(ts_ms) WHERE status = 'pending';

-- Signing keys fetched from an OpenID provider, shared by all workers.
CREATE TABLE jwks_cache (
    url        TEXT PRIMARY KEY,
    body       TEXT NOT NULL,
    fetched_ms INTEGER NOT NULL
);
