-- Audit and time travel over millions of events: every filter has an index that keeps
-- position order, and a time becomes a position through recorded_at.
CREATE INDEX entry_history_recorded_at_idx ON entry_history (recorded_at, position);
CREATE INDEX entry_history_namespace_position_idx ON entry_history (namespace, position);
CREATE INDEX entry_history_actor_position_idx ON entry_history (actor, position);
CREATE INDEX entry_history_correlation_idx ON entry_history (correlation_id, position);
-- An entry as of a position: the last of its events at or before it, in O(log n) however
-- long its history is.
CREATE INDEX entry_history_key_position_idx ON entry_history (namespace, key, position);
