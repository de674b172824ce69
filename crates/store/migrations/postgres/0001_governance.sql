-- Governance entities, the usage ledger and the meters' saved state (PostgreSQL).
-- Entities are kept as the JSON of the engine's types ("spec"); the other columns are for queries only.

CREATE TABLE customers (
    id   TEXT PRIMARY KEY,
    spec JSONB NOT NULL
);

CREATE TABLE teams (
    id          TEXT PRIMARY KEY,
    customer_id TEXT,
    spec        JSONB NOT NULL
);

-- Never the key's value: its SHA-256 (hex) only, by which a presented key is found.
CREATE TABLE virtual_keys (
    id           TEXT PRIMARY KEY,
    value_sha256 TEXT NOT NULL,
    team_id      TEXT,
    customer_id  TEXT,
    spec         JSONB NOT NULL
);
CREATE INDEX virtual_keys_by_value_sha256 ON virtual_keys (value_sha256);

-- One row per settled request; append only, from every replica.
CREATE TABLE usage_ledger (
    seq               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at_ms             BIGINT NOT NULL,
    request_id        TEXT NOT NULL,
    virtual_key       TEXT,
    team              TEXT,
    customer          TEXT,
    provider          TEXT NOT NULL,
    model             TEXT NOT NULL,
    prompt_tokens     BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cost_usd          DOUBLE PRECISION NOT NULL
);
CREATE INDEX usage_ledger_by_time ON usage_ledger (at_ms);
CREATE INDEX usage_ledger_by_key ON usage_ledger (virtual_key, at_ms);

-- A meter's use in its current window; window_start_ms and window_end_ms are both NULL for a meter that
-- never resets.
CREATE TABLE meter_states (
    name            TEXT PRIMARY KEY,
    window_start_ms BIGINT,
    window_end_ms   BIGINT,
    used            DOUBLE PRECISION NOT NULL
);
