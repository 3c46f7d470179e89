-- The event store: the table and composite type the eventsourcing library's Postgres
-- application recorder expects (application name "ssot"), plus the database commit clock.
CREATE TABLE ssot_events (
    originator_id uuid NOT NULL,
    originator_version bigint NOT NULL,
    topic text,
    state bytea,
    notification_id bigserial,
    -- clock_timestamp() is evaluated by the INSERT, which runs after the recorder took the
    -- table's EXCLUSIVE lock: commit order, notification order and recorded_at agree.
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (originator_id, originator_version)
) WITH (
    autovacuum_vacuum_threshold = 100000000,
    autovacuum_vacuum_scale_factor = 0.5,
    autovacuum_analyze_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.01
);
CREATE UNIQUE INDEX ssot_events_notification_id_idx ON ssot_events (notification_id ASC);

-- The library creates the same type for every application in a schema: share it.
DO $$
BEGIN
    IF to_regtype('stored_event_uuid') IS NULL THEN
        CREATE TYPE stored_event_uuid AS (
            originator_id uuid,
            originator_version bigint,
            topic text,
            state bytea
        );
    END IF;
END;
$$;

-- History is append-only (promise 2): no code path may update or delete an event row.
CREATE FUNCTION ssot_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ssot_events is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER ssot_events_no_update_delete
    BEFORE UPDATE OR DELETE ON ssot_events
    FOR EACH ROW EXECUTE FUNCTION ssot_events_append_only();
CREATE TRIGGER ssot_events_no_truncate
    BEFORE TRUNCATE ON ssot_events
    FOR EACH STATEMENT EXECUTE FUNCTION ssot_events_append_only();
