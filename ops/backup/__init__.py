"""Verified logical backups of the log: the export file's format and running hash
(``format``), its gzip members (``compression``), the export (``exporter``), the import
(``importer``) with its line checks (``checks``) and its COPY into PostgreSQL
(``copier``), and the ``ssot export`` / ``ssot import`` commands (``commands``)."""
