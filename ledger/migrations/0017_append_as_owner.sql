-- ssot_append runs with the rights of the role that owns the schema (SECURITY DEFINER), so
-- the service's own role needs neither INSERT on ssot_events nor the right to lock it: it
-- may only call this function (ledger/roles.py grants EXECUTE), which takes the EXCLUSIVE
-- lock that keeps commit order equal to position order (a plain INSERT would not). Its
-- search_path is fixed to this schema (then pg_temp, searched last) so that a caller cannot
-- put look-alike tables or functions in its way. A later CREATE OR REPLACE of ssot_append
-- must say SECURITY DEFINER and SET search_path again (tests/integration/test_roles.py
-- checks both on the migrated schema).
-- Cost: about 14 µs more per call (median 78 against 64 µs per call of a one-event batch,
-- 1,500 calls inside one transaction, six alternating rounds, PostgreSQL 15 on the 2-core
-- development machine), beside the 1-2 ms a batch's commit takes.
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION ssot_append(stored_event_uuid[], json, json, text)'
                   ' SECURITY DEFINER SET search_path = %I, pg_temp', current_schema());
END;
$$;
-- Only the roles ledger/roles.py grants it to may append (and the owner).
REVOKE EXECUTE ON FUNCTION ssot_append(stored_event_uuid[], json, json, text) FROM PUBLIC;
