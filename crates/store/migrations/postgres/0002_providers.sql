-- Providers written through the management API (PostgreSQL), kept as the JSON of the engine's ProviderSpec.
-- The spec holds the keys' values as written (a literal key, or env.NAME): a provider key must be sent, not
-- only recognised. "seq" keeps the order they were first written in; replacing a provider keeps its place.

CREATE TABLE providers (
    name TEXT PRIMARY KEY,
    seq  BIGINT GENERATED ALWAYS AS IDENTITY,
    spec JSONB NOT NULL
);
