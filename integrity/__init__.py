"""Tamper evidence over the log: the Merkle tree, signed digests, proofs and verification.

The hash chain link itself is made where the write is decided (``ledger/chain.py``); this
part checks, publishes and proves it, and imports only ``ledger``."""
