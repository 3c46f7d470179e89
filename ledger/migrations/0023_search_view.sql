-- Search moves off the write path: entries' trigram index (0020, 0022) was updated by
-- every write inside the writer's transaction, while it held the log's lock, and now and
-- then that transaction also merged GIN's pending list into the tree. The asynchronous
-- view entry_search (projections/entry_search.py) keeps the same text under the same
-- kind of index, folded from the log after the commit (docs/performance.md, "Search off
-- the write path"). pg_trgm stays: the view's index uses it. The view's table is made
-- by `ssot migrate` and by its runner, and it folds the log from the start on first run.
DROP INDEX IF EXISTS entries_search_idx;
