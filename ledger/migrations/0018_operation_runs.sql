-- The last run of each operation that monitoring watches (ledger/operation_runs.py):
-- ``verify`` (ssot verify, GET /v1/integrity/verify) and ``export`` (ssot export, the
-- backup). ``ssot status`` and ``GET /metrics`` read it: when did it last run, did it
-- succeed, and when did it last succeed.
CREATE TABLE operation_runs (
    operation text PRIMARY KEY CHECK (operation IN ('verify', 'export')),
    finished_at timestamptz NOT NULL,
    ok boolean NOT NULL,
    last_ok_at timestamptz,
    detail jsonb NOT NULL DEFAULT '{}'
);
