-- 001_init.sql - aigw's shared state: users, keys, limits, budgets, breakers, audit.
-- (PostgreSQL 15 version of sql/001_init.sql; same tables, columns and keys.)
--
-- Every worker process opens this database; whatever one worker must know of
-- another's work lives here. Times are Unix milliseconds (BIGINT) unless named
-- otherwise. Applied by `aigw db migrate` and on first start, as one
-- transaction. SQLite INTEGER is BIGINT here, REAL is DOUBLE PRECISION, BLOB
-- is BYTEA; WITHOUT ROWID has no PostgreSQL counterpart (and needs none).

CREATE TABLE users (
    user_id             TEXT PRIMARY KEY,
    roles               TEXT NOT NULL DEFAULT 'AI.User',  -- comma-separated
    requests_per_window BIGINT,                           -- NULL: the config's default
    window_s            BIGINT,
    tokens_per_minute   BIGINT,
    token_budget        BIGINT,
    budget_period       TEXT CHECK (budget_period IN ('day', 'month', 'total')),
    disabled            BIGINT NOT NULL DEFAULT 0,
    created_ms          BIGINT NOT NULL
);

CREATE TABLE api_keys (
    key_id       TEXT PRIMARY KEY,            -- the public prefix shown in listings
    key_hash     BYTEA NOT NULL UNIQUE,       -- SHA-256 of the whole key; the key itself is never stored
    user_id      TEXT NOT NULL REFERENCES users(user_id),
    created_ms   BIGINT NOT NULL,
    expires_ms   BIGINT,
    revoked_ms   BIGINT
);

-- GCRA state: the theoretical arrival time per user and limit kind.
CREATE TABLE rate_state (
    user_id TEXT NOT NULL,
    kind    TEXT NOT NULL,                    -- 'requests' or 'tokens'
    tat_us  BIGINT NOT NULL,                  -- microseconds
    PRIMARY KEY (user_id, kind)
);

CREATE TABLE budget_usage (
    user_id      TEXT NOT NULL,
    period_start BIGINT NOT NULL,             -- Unix seconds of the period's start (0 for 'total')
    used         BIGINT NOT NULL DEFAULT 0,   -- settled tokens
    reserved     BIGINT NOT NULL DEFAULT 0,   -- tokens held by requests in flight
    PRIMARY KEY (user_id, period_start)
);

CREATE TABLE backend_state (
    name               TEXT PRIMARY KEY,
    state              TEXT NOT NULL DEFAULT 'closed' CHECK (state IN ('closed', 'open', 'half_open')),
    failures           BIGINT NOT NULL DEFAULT 0,
    open_until_ms      BIGINT NOT NULL DEFAULT 0,
    half_open_inflight BIGINT NOT NULL DEFAULT 0,
    last_error         TEXT,
    updated_ms         BIGINT NOT NULL DEFAULT 0
);

-- id: SQLite's INTEGER PRIMARY KEY (rowid alias) becomes an identity column;
-- rows are inserted without it.
-- timestamp: SQLite computes it on read (VIRTUAL); PostgreSQL 15 has only
-- STORED generated columns, and only immutable expressions (to_char is not),
-- so the text is built from integer arithmetic on ts_ms. Same text as
-- strftime('%Y-%m-%dT%H:%M:%fZ', ts_ms / 1000.0, 'unixepoch'): UTC, exact
-- milliseconds, e.g. 2024-05-01T12:34:56.789Z. NULL outside years 0001-9999.
CREATE TABLE audit_log (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id        TEXT NOT NULL UNIQUE,
    ts_ms             BIGINT NOT NULL,
    timestamp         TEXT GENERATED ALWAYS AS (
        CASE WHEN ts_ms >= -62135596800000 AND ts_ms < 253402300800000 THEN
            -- ts_ms + 62135596800000: milliseconds since 0001-01-01T00:00:00Z
            lpad(extract(YEAR FROM DATE '0001-01-01' + ((ts_ms + 62135596800000) / 86400000)::int)::text, 4, '0') || '-' ||
            lpad(extract(MONTH FROM DATE '0001-01-01' + ((ts_ms + 62135596800000) / 86400000)::int)::text, 2, '0') || '-' ||
            lpad(extract(DAY FROM DATE '0001-01-01' + ((ts_ms + 62135596800000) / 86400000)::int)::text, 2, '0') || 'T' ||
            lpad(((ts_ms + 62135596800000) % 86400000 / 3600000)::text, 2, '0') || ':' ||
            lpad(((ts_ms + 62135596800000) % 3600000 / 60000)::text, 2, '0') || ':' ||
            lpad(((ts_ms + 62135596800000) % 60000 / 1000)::text, 2, '0') || '.' ||
            lpad(((ts_ms + 62135596800000) % 1000)::text, 3, '0') || 'Z'
        END) STORED,
    user_id           TEXT,
    end_user          TEXT,                   -- user_id from the body when different from the caller
    operation         TEXT NOT NULL,          -- route: chat, chat.completions, embeddings, ...
    model             TEXT,
    deployment        TEXT,
    backend           TEXT,                   -- the backend that answered (or was tried last)
    attempts          BIGINT NOT NULL DEFAULT 0,
    attempts_detail   TEXT,                   -- JSON array: [{backend, status, latency_ms, error}]
    stream            BIGINT NOT NULL DEFAULT 0,
    reserved_tokens   BIGINT NOT NULL DEFAULT 0,
    budget_period_start BIGINT,
    prompt_tokens     BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    total_tokens      BIGINT NOT NULL DEFAULT 0,
    latency_ms        DOUBLE PRECISION,
    status            TEXT NOT NULL CHECK (status IN ('pending', 'success', 'error', 'refused', 'abandoned')),
    http_status       BIGINT,
    error_code        TEXT,
    error             TEXT,
    client_ip         TEXT,
    trace_id          TEXT,
    request_body      TEXT,
    response_body     TEXT,
    completed_ms      BIGINT
);
CREATE INDEX audit_log_ts ON audit_log(ts_ms);
CREATE INDEX audit_log_user_ts ON audit_log(user_id, ts_ms);
CREATE INDEX audit_log_pending ON audit_log(ts_ms) WHERE status = 'pending';

-- Signing keys fetched from an OpenID provider, shared by all workers.
CREATE TABLE jwks_cache (
    url        TEXT PRIMARY KEY,
    body       TEXT NOT NULL,
    fetched_ms BIGINT NOT NULL
);
