"""Clients of the ledger: the subscriber SDK."""
