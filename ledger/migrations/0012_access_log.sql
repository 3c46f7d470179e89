-- The access log (access/log.py, ledger/access_chain.py): every authentication failure,
-- authorisation denial and use of an admin action, one row each, hash-chained.
--
-- seq 1, 2, 3… without gaps: assigned by the appender under an advisory lock (not a
-- sequence, whose values a rolled-back transaction loses), so a missing row is a gap the
-- verifier reports. ``record`` is the canonical JSON text of the record (ledger/chain.py),
-- kept as text so that its hash is recomputed from exactly the bytes that were hashed.
-- ``hash`` = SHA-256 hex of canonical({"prev_hash", "record", "recorded_at", "seq"}),
-- ``recorded_at`` spelt as RFC 3339 UTC with microseconds; ``prev_hash`` is the previous
-- row's hash (NULL for seq 1).
CREATE TABLE access_log (
    seq bigint PRIMARY KEY CHECK (seq >= 1),
    recorded_at timestamptz NOT NULL,
    record text NOT NULL,
    prev_hash text,
    hash text NOT NULL
);
CREATE INDEX access_log_recorded_at_idx ON access_log (recorded_at);
CREATE INDEX access_log_subject_idx ON access_log (((record::jsonb) ->> 'subject'), seq);
CREATE INDEX access_log_decision_idx ON access_log (((record::jsonb) ->> 'decision'), seq);

-- Append-only like ssot_events and the digests: an UPDATE, DELETE or TRUNCATE raises.
-- (Someone who can disable the trigger can still rewrite rows: ``ssot verify`` finds it.)
CREATE FUNCTION ssot_access_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'access_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER access_log_no_update_delete BEFORE UPDATE OR DELETE ON access_log
    FOR EACH ROW EXECUTE FUNCTION ssot_access_log_append_only();
CREATE TRIGGER access_log_no_truncate BEFORE TRUNCATE ON access_log
    FOR EACH STATEMENT EXECUTE FUNCTION ssot_access_log_append_only();
