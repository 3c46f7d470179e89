"""Read models of the log. Each module answers one question with its SQL beside it.

The inline views (``entries``, ``entry_history``) are written by the ledger's recorder in
the same transaction as the events, so these reads are consistent with every write that
has returned.
"""
