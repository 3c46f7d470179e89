"""Versioned SQL migrations, applied in file-name order by ``ledger.migrate``."""
