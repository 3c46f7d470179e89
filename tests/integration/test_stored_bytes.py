"""Every stored byte counts: `ssot verify` finds any change to an event's stored state — a
changed member, even one the hash of older events leaves out (the library's timestamp), an
added, renamed, removed or moved member, a re-spelt byte — at its position, naming the
member; in events written today (class version 5, whose hash covers every member) and in
the imported log of an earlier version (class version 3, whose bytes its seal vouches
for). That log still verifies, and the migration that brings the seal seals a log from
before it.

Each log is tampered with once, every kind at an event of its own, as a superuser would
(the append-only triggers off for the tampering only), and verified once: each test looks
for its own problem in that report. The databases are the module's own, dropped at its
end."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from psycopg import sql

from nexus_ssot.ledger.commands import Context, Put
from nexus_ssot.ledger.documents import Limits
from nexus_ssot.ledger.migrate import migrate
from nexus_ssot.ledger.store import open_application
from nexus_ssot.ledger.writer import GroupCommitWriter

SSOT = str(Path(sys.executable).parent / "ssot")
OLD_EXPORT = Path(__file__).parent.parent / "fixtures" / "main-2026-12-03.ndjson.gz"
Conn = psycopg.Connection[tuple[Any, ...]]
#: A state edit: the decoded state changed in place, or the stored bytes replaced.
Edit = Callable[[dict[str, Any]], None] | Callable[[bytes], bytes]


def _url(server_url: str, name: str) -> str:
    parts = psycopg.conninfo.conninfo_to_dict(server_url)
    parts["dbname"] = name
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in parts.items()})


@pytest.fixture(scope="module")
def databases(server_url: str) -> Iterator[Callable[[str | None], str]]:
    """Makes databases of the module's own (empty, or a copy of a template), dropped at
    its end."""
    made: list[str] = []

    def make(template: str | None = None) -> str:
        name = f"ssot_bytes_{secrets.token_hex(4)}"
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)) +
                         (sql.SQL(" TEMPLATE {}").format(sql.Identifier(
                             psycopg.conninfo.conninfo_to_dict(template)["dbname"]))
                          if template else sql.SQL("")))
        made.append(name)
        return _url(server_url, name)

    try:
        yield make
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            for name in made:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(name)))


@contextlib.contextmanager
def tampering(url: str) -> Iterator[Conn]:
    """A superuser's connection with the append-only triggers off (back on afterwards)."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [sql.Identifier(t) for t in ("ssot_events", "state_seals")
                  if conn.execute("SELECT to_regclass(%s)", (t,)).fetchone() != (None,)]
        for table in tables:
            conn.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER USER").format(table))
        try:
            yield conn
        finally:
            for table in tables:
                conn.execute(sql.SQL("ALTER TABLE {} ENABLE TRIGGER USER").format(table))


def tamper(conn: Conn, position: int, edit: Edit, *, raw: bool = False) -> None:
    """Rewrite the state of the event at ``position`` by ``edit``: of its decoded members
    (re-encoded as the writer would), or of its bytes (``raw``)."""
    row = conn.execute("SELECT state FROM ssot_events WHERE notification_id = %s",
                       (position,)).fetchone()
    assert row is not None
    state = bytes(row[0])
    if raw:
        changed = edit(state)  # type: ignore[arg-type]
    else:
        decoded = orjson.loads(state)
        edit(decoded)  # type: ignore[arg-type]
        changed = orjson.dumps(decoded)
    assert isinstance(changed, bytes) and changed != state
    conn.execute("UPDATE ssot_events SET state = %s WHERE notification_id = %s",
                 (changed, position))


def verify(url: str) -> tuple[int, dict[str, Any]]:
    """`ssot verify --json` as a process: its exit code and report."""
    done = subprocess.run([SSOT, "verify", "--json"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "SSOT_DATABASE_URL": url})
    assert done.stdout.startswith("{"), done.stdout + done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return done.returncode, report


def problem_at(report: dict[str, Any], position: int) -> dict[str, Any]:
    found = [p for p in report["problems"] if p["position"] == position]
    assert len(found) == 1, (position, report["problems"])
    return found[0]


# --- the edits, one per kind of tampering --------------------------------------------------

def _changed_timestamp(state: dict[str, Any]) -> None:
    moment = datetime.fromisoformat(state["timestamp"])
    state["timestamp"] = moment.replace(year=moment.year - 1).isoformat()


def _added(state: dict[str, Any]) -> None:
    state["approved_by"] = "mallory"


def _renamed(state: dict[str, Any]) -> None:
    items = [("idempotency_keys" if k == "idempotency_key" else k, v)
             for k, v in state.items()]
    state.clear()
    state.update(items)


def _removed(state: dict[str, Any]) -> None:
    del state["causation_id"]


def _reordered(state: dict[str, Any]) -> None:
    document = state["document"]
    state["document"] = dict(reversed(document.items()))


def _respelt(state: bytes) -> bytes:
    return state.replace(b'"actor":', b'"actor": ', 1)


def _older_class(state: dict[str, Any]) -> None:
    state["class_version"] -= 1


@dataclass(frozen=True)
class Tampering:
    """What was done to one event (``edit``), and what verify must say: ``kind`` at its
    position, ``field``."""

    name: str
    edit: Edit
    field: str
    kind: str = "event_altered"
    raw: bool = False


TODAY = [
    Tampering("a changed timestamp", _changed_timestamp, "timestamp"),
    Tampering("an added member", _added, "approved_by"),
    Tampering("a renamed member", _renamed, "idempotency_key"),
    Tampering("a removed member", _removed, "causation_id"),
    Tampering("members moved inside the document", _reordered, "document"),
    Tampering("a space after a colon", _respelt, "state", raw=True),
    Tampering("an older class version", _older_class, "class_version"),
]
OLD = [
    Tampering("a changed timestamp", _changed_timestamp, "state"),
    Tampering("an added member", _added, "approved_by"),
    Tampering("a renamed member", _renamed, "idempotency_key"),
    Tampering("a removed member", _removed, "causation_id"),
    Tampering("members moved inside the document", _reordered, "document"),
    Tampering("a space after a colon", _respelt, "state", raw=True),
]


def _context() -> Context:
    return Context(event_id=uuid.uuid4(), timestamp=datetime.now(UTC), actor="alice",
                   correlation_id=f"bytes-{secrets.token_hex(3)}")


@pytest.fixture(scope="module")
def todays_log(databases: Callable[[str | None], str]) -> str:
    """A log written by today's writer: an entry per tampering, each with a document of
    several members, then a second version of each."""
    url = databases(None)
    migrate(url)
    app = open_application(url, pool_size=1)
    try:
        writer = GroupCommitWriter(app, lambda _ns: Limits())
        for round_ in range(2):
            for future in writer.write_batch([
                    (Put("cfg", f"e{n}", document={"z": n, "a": round_, "m": [1, "x"]}),
                     _context(), None) for n in range(len(TODAY))]):
                future.result()
    finally:
        app.close()
    return url


@pytest.fixture(scope="module")
def old_log(databases: Callable[[str | None], str]) -> str:
    """The export of an earlier version (class version 3 events), imported."""
    url = databases(None)
    done = subprocess.run([SSOT, "import", str(OLD_EXPORT)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "SSOT_DATABASE_URL": url})
    assert done.returncode == 0, done.stderr
    return url


def _first_versions(url: str, count: int) -> list[int]:
    """Positions of ``count`` version-1 events with a document of two members or more,
    of as many entries, not restores."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT notification_id, state FROM ssot_events WHERE originator_version = 1"
            " AND topic NOT LIKE '%%Restored' ORDER BY notification_id").fetchall()
    found = [int(p) for p, state in rows
             if isinstance(d := orjson.loads(bytes(state))["document"], dict) and len(d) > 1]
    assert len(found) >= count
    return found[:count]


def _tampered(databases: Callable[[str | None], str], log: str,
              tamperings: list[Tampering]) -> tuple[int, dict[str, Any], dict[str, int]]:
    url = databases(log)
    positions = dict(zip((t.name for t in tamperings),
                         _first_versions(url, len(tamperings)), strict=True))
    with tampering(url) as conn:
        for t in tamperings:
            tamper(conn, positions[t.name], t.edit, raw=t.raw)
    code, report = verify(url)
    return code, report, positions


@pytest.fixture(scope="module")
def todays_log_tampered(databases: Callable[[str | None], str], todays_log: str
                        ) -> tuple[int, dict[str, Any], dict[str, int]]:
    return _tampered(databases, todays_log, TODAY)


@pytest.fixture(scope="module")
def old_log_tampered(databases: Callable[[str | None], str], old_log: str
                     ) -> tuple[int, dict[str, Any], dict[str, int]]:
    return _tampered(databases, old_log, OLD)


# --- today's events: the hash covers every member ------------------------------------------

def test_todays_log_verifies_untouched(todays_log: str) -> None:
    code, report = verify(todays_log)
    assert (code, report["ok"], report["events"]) == (0, True, 2 * len(TODAY))


@pytest.mark.parametrize("t", TODAY, ids=lambda t: t.name)
def test_any_change_to_a_stored_event_of_today_is_found_at_its_position(
        todays_log_tampered: tuple[int, dict[str, Any], dict[str, int]], t: Tampering
) -> None:
    code, report, positions = todays_log_tampered
    assert code == 1
    problem = problem_at(report, positions[t.name])
    assert (problem["kind"], problem["field"], problem["version"]) == (t.kind, t.field, 1)


def test_nothing_else_is_reported_of_today(
        todays_log_tampered: tuple[int, dict[str, Any], dict[str, int]]) -> None:
    _code, report, positions = todays_log_tampered
    assert sorted(p["position"] for p in report["problems"]) == sorted(positions.values())


# --- the log of an earlier version: its seal vouches for what its hash leaves out ----------

def test_the_old_log_verifies_and_every_event_is_sealed(old_log: str) -> None:
    code, report = verify(old_log)
    assert (code, report["ok"]) == (0, True) and report["events"] > 50
    with psycopg.connect(old_log) as conn:
        row = conn.execute("SELECT (SELECT count(*) FROM ssot_events),"
                           " (SELECT count(*) FROM state_seals s JOIN ssot_events e"
                           "  ON e.notification_id = s.position"
                           "  AND s.state_sha256 = sha256(e.state))").fetchone()
    assert row is not None and row[0] == row[1] == report["events"]


@pytest.mark.parametrize("t", OLD, ids=lambda t: t.name)
def test_any_change_to_an_old_stored_event_is_found_at_its_position(
        old_log_tampered: tuple[int, dict[str, Any], dict[str, int]], t: Tampering) -> None:
    code, report, positions = old_log_tampered
    assert code == 1
    problem = problem_at(report, positions[t.name])
    assert (problem["kind"], problem["field"], problem["version"]) == (t.kind, t.field, 1)


def test_nothing_else_is_reported_of_the_old_log(
        old_log_tampered: tuple[int, dict[str, Any], dict[str, int]]) -> None:
    _code, report, positions = old_log_tampered
    assert sorted(p["position"] for p in report["problems"]) == sorted(positions.values())


def test_an_old_event_whose_seal_is_gone_is_reported(
        databases: Callable[[str | None], str], old_log: str) -> None:
    url = databases(old_log)
    [position] = _first_versions(url, 1)
    with tampering(url) as conn:
        conn.execute("DELETE FROM state_seals WHERE position = %s", (position,))
    code, report = verify(url)
    assert code == 1
    assert [(p["kind"], p["position"]) for p in report["problems"]] == \
        [("unsealed_event", position)]


def test_the_upgrade_seals_a_log_from_before_it(databases: Callable[[str | None], str],
                                               old_log: str) -> None:
    """A database as it was before migration 0014 (the old log, no seals) is sealed by
    migrating it, verifies, and a timestamp changed afterwards is found."""
    url = databases(old_log)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE state_seals")
        conn.execute("DELETE FROM ssot_schema_migrations WHERE version = 14")
    assert [m.version for m in migrate(url)] == [14]
    code, report = verify(url)
    assert (code, report["ok"]) == (0, True)
    [position] = _first_versions(url, 1)
    with tampering(url) as conn:
        tamper(conn, position, _changed_timestamp)
    code, report = verify(url)
    assert code == 1
    assert [(p["kind"], p["position"]) for p in report["problems"]] == \
        [("event_altered", position)]
