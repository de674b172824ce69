-- Governance entities, the usage ledger and the meters' saved state (SQLite).
-- Entities are kept as the JSON of the engine's types ("spec"); the other columns are for queries only.

CREATE TABLE customers (
    id   TEXT PRIMARY KEY NOT NULL,
    spec TEXT NOT NULL
);

CREATE TABLE teams (
    id          TEXT PRIMARY KEY NOT NULL,
    customer_id TEXT,
    spec        TEXT NOT NULL
);

-- Never the key's value: its SHA-256 (hex) only, by which a presented key is found.
CREATE TABLE virtual_keys (
    id           TEXT PRIMARY KEY NOT NULL,
    value_sha256 TEXT NOT NULL,
    team_id      TEXT,
    customer_id  TEXT,
    spec         TEXT NOT NULL
);
CREATE INDEX virtual_keys_by_value_sha256 ON virtual_keys (value_sha256);

-- One row per settled request; append only.
CREATE TABLE usage_ledger (
    seq               INTEGER PRIMARY KEY,
    at_ms             INTEGER NOT NULL,
    request_id        TEXT NOT NULL,
    virtual_key       TEXT,
    team              TEXT,
    customer          TEXT,
    provider          TEXT NOT NULL,
    model             TEXT NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_usd          REAL NOT NULL
);
CREATE INDEX usage_ledger_by_time ON usage_ledger (at_ms);
CREATE INDEX usage_ledger_by_key ON usage_ledger (virtual_key, at_ms);

-- A meter's use in its current window; window_start_ms and window_end_ms are both NULL for a meter that
-- never resets.
CREATE TABLE meter_states (
    name            TEXT PRIMARY KEY NOT NULL,
    window_start_ms INTEGER,
    window_end_ms   INTEGER,
    used            REAL NOT NULL
);
