-- Seals of the events whose hash does not cover their whole stored state (event class
-- versions before 5: the library's timestamp and class_version, and the order of the
-- members inside a value, are outside it). A seal is the SHA-256 of the event's stored
-- state bytes as they were when it was made: here, at the upgrade, for every event the
-- log holds (all of them written before version 5); by `ssot import` for the older
-- events it imports. `ssot verify` checks each such event's bytes against its seal and
-- reports one without a seal. Events from version 5 on need none: their hash covers
-- every member they store, and their bytes follow from the members.
CREATE TABLE state_seals (
    position bigint PRIMARY KEY,
    state_sha256 bytea NOT NULL
);
INSERT INTO state_seals (position, state_sha256)
SELECT notification_id, sha256(state) FROM ssot_events WHERE state IS NOT NULL;

-- Append-only like the events they seal (the function of migration 0011).
CREATE TRIGGER state_seals_no_update_delete BEFORE UPDATE OR DELETE ON state_seals
    FOR EACH ROW EXECUTE FUNCTION ssot_digests_append_only();
CREATE TRIGGER state_seals_no_truncate BEFORE TRUNCATE ON state_seals
    FOR EACH STATEMENT EXECUTE FUNCTION ssot_digests_append_only();
