-- Digests of the log (ledger/digests.py): an RFC 6962 Merkle tree over every event in
-- position order, stored as it grows, and a signed, chained digest of its root at a cadence.
--
-- merkle_leaves: leaf idx (0, 1, 2… = the event's ordinal in the log) of the event at
-- ``position`` (ssot_events.notification_id); ``hash`` = merkle.leaf_hash(
-- integrity.leaf_data(position, recorded_at, event hash)), 32 bytes.
CREATE TABLE merkle_leaves (
    idx bigint PRIMARY KEY CHECK (idx >= 0),
    position bigint NOT NULL UNIQUE,
    hash bytea NOT NULL CHECK (octet_length(hash) = 32)
);

-- merkle_nodes: the root of every completed perfect subtree above the leaves: level L,
-- index i covers leaves [i * 2^L, (i + 1) * 2^L) (merkle.Frontier.add); level >= 1.
CREATE TABLE merkle_nodes (
    level int NOT NULL CHECK (level >= 1),
    idx bigint NOT NULL CHECK (idx >= 0),
    hash bytea NOT NULL CHECK (octet_length(hash) = 32),
    PRIMARY KEY (level, idx)
);

-- digests: seq 1, 2, 3…; the tree of the first ``size`` leaves, whose last event is at
-- ``position``, has root ``root``. ``prev`` is the previous digest's hash (NULL for seq 1),
-- ``hash`` = SHA-256 of this digest's canonical content (ledger/digests.py), ``signature``
-- an Ed25519 signature of that content by the key ``key_id`` (NULL when unsigned).
CREATE TABLE digests (
    seq bigint PRIMARY KEY CHECK (seq >= 1),
    position bigint NOT NULL UNIQUE,
    size bigint NOT NULL UNIQUE CHECK (size >= 1),
    root bytea NOT NULL CHECK (octet_length(root) = 32),
    recorded_at timestamptz NOT NULL,
    prev bytea CHECK (octet_length(prev) = 32),
    hash bytea NOT NULL CHECK (octet_length(hash) = 32),
    signature bytea,
    key_id text,
    CHECK ((signature IS NULL) = (key_id IS NULL)),
    CHECK ((seq = 1) = (prev IS NULL))
);

-- Append-only like ssot_events (promise 2 and 7).
CREATE FUNCTION ssot_digests_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER merkle_leaves_no_update_delete BEFORE UPDATE OR DELETE ON merkle_leaves
    FOR EACH ROW EXECUTE FUNCTION ssot_digests_append_only();
CREATE TRIGGER merkle_leaves_no_truncate BEFORE TRUNCATE ON merkle_leaves
    FOR EACH STATEMENT EXECUTE FUNCTION ssot_digests_append_only();
CREATE TRIGGER merkle_nodes_no_update_delete BEFORE UPDATE OR DELETE ON merkle_nodes
    FOR EACH ROW EXECUTE FUNCTION ssot_digests_append_only();
CREATE TRIGGER merkle_nodes_no_truncate BEFORE TRUNCATE ON merkle_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION ssot_digests_append_only();
CREATE TRIGGER digests_no_update_delete BEFORE UPDATE OR DELETE ON digests
    FOR EACH ROW EXECUTE FUNCTION ssot_digests_append_only();
CREATE TRIGGER digests_no_truncate BEFORE TRUNCATE ON digests
    FOR EACH STATEMENT EXECUTE FUNCTION ssot_digests_append_only();
