-- Writes refused because their document violated the namespace's schema, counted per
-- namespace and minute (the quality view reports the last hour and day). Nothing of a
-- refused write is in the log, so they are counted here by the HTTP workers; rows older
-- than a day are dropped as new ones come.
CREATE TABLE schema_refusals (
    namespace text NOT NULL,
    minute timestamptz NOT NULL,
    refused bigint NOT NULL,
    PRIMARY KEY (namespace, minute)
);
CREATE INDEX schema_refusals_minute_idx ON schema_refusals (minute);
