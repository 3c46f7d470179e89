"""A database written before the code was restructured still loads after it.

The fixture is what the ledger of commit 55ab1a4 (the last one before the restructuring,
whose event classes lived in ``nexus_ssot.ledger.domain`` and whose stored topics name that
module) wrote and answered, made by ``tests/fixtures/make_compat_fixture.py`` run from that
commit: ``ssot export`` of a varied history (namespace settings, every kind of write,
merges, reverts, a restore, batches, unicode, nested and scalar documents, idempotent
retries, signed digests), the digests as NATS received them, the key that signed them,
and what the old server answered to the reads of that history. Here it is imported with
``ssot import``, served by today's API, read again and verified with ``ssot verify``.

Two kinds of answer changed on purpose since: a read of a namespace that did not exist (or
did not exist yet at the point read) was answered as an empty namespace, and is now
``404 namespace_not_found``; and the list of namespaces gives each one's last change time
(``last_recorded_at``) beside its position. Each such read is checked against the imported
log.

Every read is compared whole (status, media type, ETag and the body byte for byte). Each
was sent with a fixed X-Correlation-Id, so problem bodies carry no generated id. Reads
whose answer belongs to one running server were not recorded: /v1/health (lags measured
against the clock), /v1/integrity/public-key (it needs the signing key, which was thrown
away), and proofs of versions no digest covers yet (they name when the next digest is due).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.integration.conftest import AUTH

from . import test_backup
from .conftest import RunningServer, make_settings
from .test_backup import ssot

FIXTURES = Path(__file__).parent.parent / "fixtures"
EXPORT = FIXTURES / "main-2026-12-03.ndjson.gz"
READS = FIXTURES / "main-2026-12-03.reads.json"
PUBLISHED_DIGESTS = FIXTURES / "main-2026-12-03.digests.ndjson"
PUBLIC_KEY = FIXTURES / "main-2026-12-03.public-key.pem"

#: The settings the old server ran with that decide what a read answers.
SCALAR_NAMESPACES = frozenset({"flags"})
#: Sent with every read, as when the reads were recorded.
READ_HEADERS = {"X-Correlation-Id": "compat-read"}
OLD_TOPIC_MODULE = "nexus_ssot.ledger.domain"

#: Empty databases of the test's own, dropped at its end (the backup tests' fixture).
new_db = test_backup.new_db


@pytest.fixture()
def old_database(new_db: Callable[[], str]) -> str:
    """The URL of an empty database the old export was imported into."""
    url = new_db()
    done = ssot(url, "import", str(EXPORT))
    assert done.returncode == 0, done.stderr
    return url


def verify(database_url: str) -> dict[str, Any]:
    done = ssot(database_url, "verify", "--json", "--digests", str(PUBLISHED_DIGESTS),
                "--public-key", str(PUBLIC_KEY))
    assert done.returncode == 0, done.stdout + done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def recorded_reads() -> dict[str, dict[str, Any]]:
    reads: dict[str, dict[str, Any]] = json.loads(READS.read_text(encoding="utf-8"))
    return reads


def test_the_old_export_imports_into_an_empty_database_with_its_chain_verified(
        new_db: Callable[[], str]) -> None:
    done = ssot(new_db(), "import", str(EXPORT))
    assert done.returncode == 0, done.stderr
    assert "chain verified" in done.stdout


def test_the_imported_events_keep_the_topics_the_old_code_stored(old_database: str) -> None:
    with psycopg.connect(old_database) as conn:
        topics = {row[0] for row in conn.execute("SELECT DISTINCT topic FROM ssot_events")}
    assert topics == {f"{OLD_TOPIC_MODULE}:{name}" for name in (
        "NamespaceConfigured", "EntryCreated", "EntryUpdated", "EntryPatched",
        "EntryDeleted", "EntryRestored")}


def test_every_read_the_old_server_answered_is_answered_the_same(old_database: str) -> None:
    expected = recorded_reads()
    assert len(expected) > 200
    answered: dict[str, dict[str, Any]] = {}
    settings = make_settings(old_database, scalar_namespaces=SCALAR_NAMESPACES)
    with RunningServer(settings) as server, \
            httpx.Client(headers=AUTH, base_url=server.url, timeout=30) as client:
        for path in expected:
            response = client.get(path, headers=READ_HEADERS)
            answered[path] = {"status": response.status_code,
                              "content_type": response.headers.get("content-type"),
                              "etag": response.headers.get("etag"),
                              "body": response.text}
    differing = {path: {"old": expected[path], "now": answered[path]}
                 for path in expected if answered[path] != expected[path]}
    on_purpose = {path for path, d in differing.items()
                  if missing_namespace_was_answered_empty(old_database, path, **d)
                  or listing_gained_last_change_time(old_database, path, **d)}
    assert "/v1/namespaces/nobody" in on_purpose
    assert "/v1/namespaces?limit=2" in on_purpose
    assert not {path: d for path, d in differing.items() if path not in on_purpose}


def missing_namespace_was_answered_empty(database_url: str, path: str, old: dict[str, Any],
                                         now: dict[str, Any]) -> bool:
    """Whether a read changed on purpose: the old server answered a read of a namespace
    that did not exist (yet, at the point read) as an empty namespace or a missing entry;
    today it is 404 namespace_not_found, and the namespace's first event is after the
    point read (or there is none)."""
    then, today = json.loads(old["body"]), json.loads(now["body"])
    if (now["status"], today.get("code")) != (404, "namespace_not_found"):
        return False
    empty = (old["status"] == 200 and (then.get("items") == [] or (
        then.get("settings_version"), then.get("entries"), then.get("deleted")) == (0, 0, 0))
        ) or (old["status"], then.get("code")) == (404, "entry_not_found")
    namespace = path.split("/")[3].split("?")[0]
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT min(position) FROM entry_history WHERE namespace = %s"
            " OR (namespace = '_namespaces' AND key = %s)", (namespace, namespace)).fetchone()
    first = row[0] if row else None
    point = today.get("position")
    return empty and (first is None or (point is not None and first > point))


def listing_gained_last_change_time(database_url: str, path: str, old: dict[str, Any],
                                    now: dict[str, Any]) -> bool:
    """Whether a read of the list of namespaces is the old answer with each namespace's
    ``last_recorded_at`` added: when the event at its ``last_position`` was recorded."""
    if path.split("?")[0] != "/v1/namespaces" or old["status"] != 200 \
            or {k: v for k, v in now.items() if k != "body"} != \
            {k: v for k, v in old.items() if k != "body"}:
        return False
    then, today = json.loads(old["body"]), json.loads(now["body"])
    added = [{k: v for k, v in item.items() if k != "last_recorded_at"}
             for item in today["items"]]
    if {**today, "items": added} != then:
        return False
    with psycopg.connect(database_url) as conn:
        for item in today["items"]:
            row = conn.execute("SELECT recorded_at FROM ssot_events WHERE notification_id = %s",
                               (item["last_position"],)).fetchone()
            recorded = None if row is None else \
                row[0].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            if item["last_recorded_at"] != recorded:
                return False
    return True


def test_ssot_verify_passes_with_the_digests_as_published_and_their_signing_key(
        old_database: str) -> None:
    published = len(PUBLISHED_DIGESTS.read_text().splitlines())
    report = verify(old_database)
    assert report["ok"] and report["first_problem"] is None
    assert report["events"] == report["head"] > 50
    assert report["digests_checked"] == report["external_digests"] == published
    # each digest's signature is checked twice: on its row and on its published copy
    assert report["signatures_checked"] == 2 * published
    assert report["digested_to"] == report["head"]


def test_an_imported_entry_takes_new_writes_that_continue_its_chain(old_database: str) -> None:
    db = "/v1/namespaces/config/entries/services/payments/db"
    with RunningServer(make_settings(old_database)) as server, \
            httpx.Client(headers=AUTH, base_url=server.url, timeout=30) as client:
        current = client.get(db)
        version = int(current.json()["version"])
        put = client.put(db, json={"after": "the restructuring"},
                         headers={"If-Match": f'"{version}"'})
        assert put.status_code == 200, put.text
        assert put.json()["version"] == version + 1
        history = client.get(db + "/history", params={"limit": 1000}).json()["items"]
        assert [item["version"] for item in history] == list(range(1, version + 2))
    report = verify(old_database)
    assert report["ok"] and report["events"] == report["head"]
