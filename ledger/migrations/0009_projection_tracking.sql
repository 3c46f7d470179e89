-- Positions of the asynchronous views (projections/runtime.py): one row per view, moved in
-- the same transaction as the view's change. The shape of the eventsourcing library's
-- single-row tracking table, so its PostgresTrackingRecorder can read it.
CREATE TABLE projection_tracking (
    application_name text PRIMARY KEY,
    notification_id bigint NOT NULL
);
