-- How far each broadcaster has published the log to NATS (advanced after each PubAck).
CREATE TABLE broadcaster_positions (
    name text PRIMARY KEY,
    position bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
