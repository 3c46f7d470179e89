-- The search index's pending list (0020) flushed in smaller, more frequent steps. A GIN
-- index with fastupdate (the default, kept: with it off every write's trigrams go
-- straight into the tree and PostgreSQL's CPU per write doubled) queues new entries in a
-- pending list, and the insert that finds the list over gin_pending_list_limit merges
-- the whole list into the tree before it commits. The writer's insert is that insert:
-- with the default 4 MB, one write batch in a few hundred paid a merge of thousands of
-- documents' trigrams while holding the log's lock, and every write behind it waited
-- (PUT @16 p99 24-31 ms against 16-18 ms at 512 kB; docs/performance.md). 512 kB makes
-- each merge an eighth as long for the same total work.
ALTER INDEX entries_search_idx SET (gin_pending_list_limit = 512);
