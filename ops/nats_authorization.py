"""NATS users from the access policy: the policies and tokens read from the database,
rendered as a nats-server ``authorization`` block (``access/nats_config.py``), for
``ssot access nats-config`` to print and for ``ssot serve`` to keep its embedded
nats-server's users in line with.

What is read: the current state (table ``entries``) of the system namespace ``_access``:
``policies/<name>`` (document = the policy), ``tokens/<id>`` (document = the token's
record; deleted = revoked), and the names of the existing namespaces, to expand namespace
globs against. A database not migrated yet reads as no policies and no tokens.

``ssot serve`` (embedded NATS only) renders at start and then every
``REFRESH_SECONDS`` (5 s); the server reloads only when the block changed (a token
made, revoked or expired, a policy or the set of namespaces changed). A change thus
reaches NATS within about 5 s (plus the reload, milliseconds); a revoked token's
connections are closed by the reload.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import psycopg

from nexus_ssot.access.nats_config import render
from nexus_ssot.access.policy import PolicySet, check_policy
from nexus_ssot.access.tokens import (
    ACCESS_NAMESPACE,
    POLICY_KEY_PREFIX,
    TOKEN_KEY_PREFIX,
    TokenRecord,
)
from nexus_ssot.ledger.errors import InvalidInput
from nexus_ssot.ledger.redaction import redact_url
from nexus_ssot.ledger.settings import Settings
from nexus_ssot.ops.embedded import EmbeddedError, EmbeddedNats

log = logging.getLogger("nexus_ssot.nats_authorization")

#: Seconds between two renderings in ``ssot serve`` (a reload only when it changed).
REFRESH_SECONDS = 5.0

# The distinct namespaces by a walk of the primary key (one index probe per namespace,
# not a scan of every entry).
_NAMESPACES = """
WITH RECURSIVE names(namespace) AS (
    (SELECT namespace FROM entries ORDER BY namespace LIMIT 1)
    UNION ALL
    SELECT (SELECT e.namespace FROM entries e WHERE e.namespace > names.namespace
            ORDER BY e.namespace LIMIT 1)
    FROM names WHERE names.namespace IS NOT NULL
)
SELECT namespace FROM names WHERE namespace IS NOT NULL
"""


@dataclass(frozen=True)
class AccessRecords:
    """What the rendering needs from the database."""

    policies: PolicySet = field(default_factory=lambda: PolicySet({}))
    tokens: tuple[TokenRecord, ...] = ()
    #: Existing namespaces (system namespaces left out: globs never match them).
    namespaces: tuple[str, ...] = ()


def read_access(conn: psycopg.Connection[Any]) -> AccessRecords:
    """The policies in force, the live tokens and the namespaces, from ``entries``. A
    policy or token record that does not parse is left out, with a warning."""
    try:
        rows = conn.execute(
            "SELECT key, document FROM entries WHERE namespace = %s AND NOT deleted "
            "ORDER BY key", (ACCESS_NAMESPACE,)).fetchall()
        names = [row[0] for row in conn.execute(_NAMESPACES).fetchall()]
    except psycopg.errors.UndefinedTable:  # not migrated yet: nothing written either
        conn.rollback()
        return AccessRecords()
    policies: dict[str, dict[str, Any]] = {}
    tokens: list[TokenRecord] = []
    for key, document in rows:
        try:
            if key.startswith(POLICY_KEY_PREFIX):
                policies[key.removeprefix(POLICY_KEY_PREFIX)] = check_policy(document)
            elif key.startswith(TOKEN_KEY_PREFIX):
                tokens.append(TokenRecord.from_document(document))
        except (InvalidInput, KeyError, TypeError, ValueError) as e:
            log.warning("%s entry %s is left out of the NATS users: %s", ACCESS_NAMESPACE, key,
                        getattr(e, "message", e))
    return AccessRecords(PolicySet(policies), tuple(tokens),
                         tuple(n for n in names if not n.startswith("_")))


def render_access(records: AccessRecords, settings: Settings, *,
                  service_user: tuple[str, str] | None,
                  namespaces: list[str] | None = None) -> str:
    """The authorization block of ``records`` under ``settings``' subject prefix, stream
    and bucket prefix (``namespaces``: expand globs against these instead of the
    database's)."""
    return render(records.policies, records.tokens, subject_prefix=settings.nats_subject_prefix,
                  stream=settings.nats_stream, kv_bucket_prefix=settings.kv_bucket_prefix,
                  service_user=service_user,
                  namespaces=records.namespaces if namespaces is None else namespaces)


class NatsAuthorizer:
    """Keeps an embedded nats-server's users those of the access policy: renders at
    ``start`` and every ``every`` seconds on a thread, reloading the server on change."""

    def __init__(self, settings: Settings, nats: EmbeddedNats,
                 every: float = REFRESH_SECONDS) -> None:
        if not settings.database_url:
            raise ValueError("NatsAuthorizer needs settings.database_url")
        self.settings = settings
        self.database_url = settings.database_url
        self.nats = nats
        self.every = every
        self.reloads = 0
        self._conn: psycopg.Connection[Any] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ssot-nats-users", daemon=True)

    def refresh(self) -> bool:
        """Render once; True when the server's users changed."""
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.database_url, autocommit=True, connect_timeout=10)
        try:
            records = read_access(self._conn)
        except psycopg.Error:
            self._conn.close()
            raise
        block = render_access(records, self.settings, service_user=self.nats.service_user)
        if not self.nats.authorize(block):
            return False
        self.reloads += 1
        log.info("NATS users reloaded (from %d policies and %d tokens)",
                 len(records.policies.policies), len(records.tokens))
        return True

    def start(self) -> None:
        """Render now (a failure is logged: the next round retries), then every
        ``every`` seconds."""
        self._refresh_logged()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)
        if self._conn is not None:
            self._conn.close()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._refresh_logged()

    def _refresh_logged(self) -> None:
        try:
            self.refresh()
        except (psycopg.Error, EmbeddedError, OSError) as e:
            log.warning("NATS users not refreshed (retrying in %gs): %s", self.every,
                        redact_url(f"{type(e).__name__}: {e}"))
