-- Inline views, written in the same transaction as the events they follow.

-- Current state: one row per entry ever written (deleted ones keep their deleting version).
CREATE TABLE entries (
    namespace text NOT NULL,
    key text NOT NULL,
    version bigint NOT NULL,
    position bigint NOT NULL,
    recorded_at timestamptz NOT NULL,
    document json,
    deleted boolean NOT NULL,
    PRIMARY KEY (namespace, key)
);
CREATE INDEX entries_live_idx ON entries (namespace, key) WHERE NOT deleted;

-- Version history: one row per event, with the resulting document and the patch.
CREATE TABLE entry_history (
    namespace text NOT NULL,
    key text NOT NULL,
    version bigint NOT NULL,
    position bigint NOT NULL,
    recorded_at timestamptz NOT NULL,
    event_type text NOT NULL,
    event_id uuid NOT NULL,
    actor text NOT NULL,
    reason text,
    correlation_id text NOT NULL,
    causation_id text,
    idempotency_key text,
    patch json NOT NULL,
    document json,
    PRIMARY KEY (namespace, key, version)
);
CREATE UNIQUE INDEX entry_history_position_idx ON entry_history (position);
CREATE UNIQUE INDEX entry_history_event_id_idx ON entry_history (event_id);

-- Idempotency keys, scoped by actor: a retried request returns the original outcome.
CREATE TABLE idempotency_keys (
    actor text NOT NULL,
    key text NOT NULL,
    request_hash bytea NOT NULL,
    namespace text NOT NULL,
    entry_key text NOT NULL,
    version bigint NOT NULL,
    position bigint NOT NULL,
    recorded_at timestamptz NOT NULL,
    PRIMARY KEY (actor, key)
);
