"""``ssot chaos``: the correctness harness. It starts its own PostgreSQL, NATS, ``ssot
serve`` (API, writer, views, digests) and ``ssot broadcast`` (``servers``), makes the
clients' identities (``identities``), runs concurrent clients and subscribers
(``clients``, ``subscribers``) while a nemesis injects faults on a seeded schedule
(``nemesis``), then proves from the recorded history, the log, the access log, the views
and what every subscriber received that nothing was lost, duplicated or made up, that
nothing an identity may not do landed and that every refusal is on the record
(``checker``, ``check_writes``, ``check_reads``, ``check_access``). ``runner`` is one
run, ``command`` the CLI.
"""

from .command import chaos

__all__ = ["chaos"]
