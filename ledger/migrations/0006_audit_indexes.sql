-- Audit and time travel over millions of events: every filter has an index that keeps
-- position order, and a time becomes a position through recorded_at.
CREATE INDEX entry_history_recorded_at_idx ON entry_history (recorded_at);
CREATE INDEX entry_history_namespace_position_idx ON entry_history (namespace, position);
CREATE INDEX entry_history_actor_position_idx ON entry_history (actor, position);
CREATE INDEX entry_history_correlation_idx ON entry_history (correlation_id, position);
