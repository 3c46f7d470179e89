-- Search across the keys and values of a namespace's live entries
-- (projections/entry_search.py, GET /v1/namespaces/{ns}/search): a trigram index over
-- each entry's key and its document's JSON text, so a substring match (ILIKE '%q%') of
-- three characters or more is an index lookup instead of a scan of the namespace.
-- pg_trgm ships with PostgreSQL (Debian's postgresql package and the embedded wheel alike)
-- and is a trusted extension: the owner of the database may create it without superuser.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX entries_search_idx ON entries
    USING gin ((key || ' ' || document::text) gin_trgm_ops) WHERE NOT deleted;
