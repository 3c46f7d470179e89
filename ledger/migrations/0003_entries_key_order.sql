-- Keys sort byte-wise whatever the database's collation, so listings and their cursors
-- are the same everywhere and a prefix is an index range.
ALTER TABLE entries ALTER COLUMN key TYPE text COLLATE "C";
-- The primary key (namespace, key) serves the listing of live entries (it walks keys in
-- order and skips deleted rows); a second index only cost every write an update.
DROP INDEX IF EXISTS entries_live_idx;
