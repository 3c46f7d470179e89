"""Verified logical backups of the log: the export/import file format and its checks
(``archive``) and the ``ssot export`` / ``ssot import`` commands (``commands``)."""
