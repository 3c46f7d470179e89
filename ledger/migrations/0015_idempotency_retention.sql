-- Idempotency keys are kept for SSOT_IDEMPOTENCY_RETENTION_SECONDS after the write they
-- name committed, then purged (ledger/idempotency_retention.py) oldest first, a bounded
-- batch per statement: this index finds the expired ones without reading the others.
CREATE INDEX idempotency_keys_recorded_at_idx ON idempotency_keys (recorded_at);
