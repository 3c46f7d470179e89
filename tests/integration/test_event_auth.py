"""Every event records how its actor authenticated (``auth``), end to end: taken by the API
from the identity the authentication middleware made of the bearer token (the bootstrap
token, an API token, a trusted proxy's token with ``X-Actor``), carried to the writer
process over its socket, hashed into the chain, stored in the version history, and read
back by the history, the audit trail (JSON, CSV, NDJSON), the event feed (CloudEvents,
catch-up and live), proofs, ``ssot verify``, ``ssot check``, ``ssot replay`` and
export/import. Events written without one (as every event before it was) have no ``auth``
member at all and read as they always did.

The module's writes go to a database of its own (verification and the consistency check
cover the whole log), written once and read by every test."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from psycopg import sql

from nexus_ssot.api.authentication import bootstrap_identity
from nexus_ssot.ledger import chain
from nexus_ssot.ledger.commands import Context, Put
from nexus_ssot.ledger.documents import Limits
from nexus_ssot.ledger.events import TYPE_OF_TOPIC
from nexus_ssot.ledger.namespace_settings import configure
from nexus_ssot.ledger.store import open_application
from nexus_ssot.ledger.writer import GroupCommitWriter

from .conftest import ADMIN_TOKEN, AUTH, make_settings, own_database, serving
from .test_backup import TABLES, add_digest, rows, ssot
from .test_event_feed import read_sse

ROOT = Path(__file__).parent.parent.parent
PROOF_SCRIPT = ROOT / "ops" / "verify_proof.py"
NONE = "absent"  # what ``.get("auth", NONE)`` gives for an event without auth
#: The administrator's (the suite's bootstrap token's) auth.
ADMIN = bootstrap_identity(hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()).auth_record()


@dataclass(frozen=True)
class Written:
    database_url: str
    api_url: str
    ns: str
    #: (key, version) -> the auth its event must carry (NONE: none).
    expected: dict[tuple[str, int], Any]
    #: The settings changes' versions -> their auth.
    settings: dict[int, Any]
    #: The auth of the API token (alice's) and of the proxy acting for carol.
    token: dict[str, Any]
    proxy: dict[str, Any]


@pytest.fixture(scope="module")
def written(server_url: str) -> Iterator[Written]:
    """Events from before auth (written by a writer of the test's own, without it), then
    writes of every kind through the API and the writer process by the administrator, an
    API token and a trusted proxy acting for an end user."""
    with own_database(server_url, "ssot_auth") as url:
        ns = f"auth{secrets.token_hex(4)}"
        _write_without_auth(url, ns)
        with serving(make_settings(url, trusted_proxies=frozenset({"user:gateway"}))) \
                as server, httpx.Client(headers=AUTH, base_url=server.url, timeout=30) as admin:
            yield _write(url, server.url, ns, admin)


def _write_without_auth(url: str, ns: str) -> None:
    """The namespace's first settings and entry a's first version, with no auth."""
    app = open_application(url, pool_size=1)
    writer = GroupCommitWriter(app, lambda _ns: Limits())
    try:
        for command in (configure(ns, {"conflict_policy": "merge"}),
                        Put(ns, "a", document={"v": 0})):
            context = Context(event_id=uuid.uuid4(), timestamp=datetime.now(UTC),
                              actor="old", correlation_id="before-auth")
            [future] = writer.write_batch([(command, context, None)])
            future.result()
    finally:
        app.close()


def _token(admin: httpx.Client, subject: str) -> tuple[str, str]:
    """(id, bearer token) of a new administrator's API token for ``subject``."""
    r = admin.post("/v1/access/tokens", json={"subject": subject, "groups": ["admins"],
                                               "expires_in": 3600})
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["token"]


def _write(url: str, api_url: str, ns: str, admin: httpx.Client) -> Written:
    entry = f"/v1/namespaces/{ns}/entries"
    alice_id, alice_token = _token(admin, "alice")
    gateway_id, gateway_token = _token(admin, "gateway")
    token = {"method": "token", "token_id": alice_id}
    proxy = {"method": "token", "token_id": gateway_id, "proxy": "gateway",
             "on_behalf_of": "carol"}
    alice = {"Authorization": f"Bearer {alice_token}"}
    carol = {"Authorization": f"Bearer {gateway_token}", "X-Actor": "carol"}

    def ok(response: httpx.Response) -> Any:
        assert response.status_code < 300, response.text
        return response.json()

    cut = ok(admin.put(f"{entry}/a", json={"v": 1}, headers={"X-Reason": "r"}))["position"]
    ok(admin.patch(f"{entry}/a", json={"w": 2}, headers={
        **alice, "Content-Type": "application/merge-patch+json"}))
    assert admin.delete(f"{entry}/a", headers=carol).status_code in (200, 204)
    ok(admin.post(f"{entry}/a/revert", json={"to_version": 1}))
    ok(admin.post("/v1/batch", headers=alice, json={"operations": [
        {"op": "put", "namespace": ns, "key": "b", "document": {"n": 1}},
        {"op": "put", "namespace": ns, "key": "c", "document": {"n": 1}}]}))
    restored = ok(admin.post(f"/v1/namespaces/{ns}/restore", headers=carol,
                             json={"position": cut, "reason": "undo"}))
    assert {(s["key"], s["version"]) for s in restored["operations"]} == {
        ("a", 6), ("b", 2), ("c", 2)}
    ok(admin.put(f"/v1/namespaces/{ns}", json={"conflict_policy": "strict"}, headers=alice))
    history = ok(admin.get(f"{entry}/a/history"))["items"]
    assert [i["actor"] for i in history] == ["old", "admin", "alice", "carol", "admin",
                                             "carol"]
    expected = {("a", 1): NONE, ("a", 2): ADMIN, ("a", 3): token, ("a", 4): proxy,
                ("a", 5): ADMIN, ("b", 1): token, ("c", 1): token, ("a", 6): proxy,
                ("b", 2): proxy, ("c", 2): proxy}
    return Written(url, api_url, ns, expected, {1: NONE, 2: token}, token, proxy)


@pytest.fixture()
def client(written: Written) -> Iterator[httpx.Client]:
    with httpx.Client(headers=AUTH, base_url=written.api_url, timeout=30) as c:
        yield c


def by_entry(items: list[dict[str, Any]]) -> dict[tuple[str, int], Any]:
    return {(i["key"], i["version"]): i.get("auth", NONE) for i in items}


def test_the_history_shows_how_each_events_actor_authenticated(
        written: Written, client: httpx.Client) -> None:
    items = []
    for key in ("a", "b", "c"):
        r = client.get(f"/v1/namespaces/{written.ns}/entries/{key}/history")
        assert r.status_code == 200, r.text
        items += r.json()["items"]
        if key == "a":  # the event without auth has no member, not a null one
            [unauthenticated] = [i for i in r.json()["items"] if i["version"] == 1]
            assert set(unauthenticated) == {
                "namespace", "key", "version", "position", "recorded_at", "event_type",
                "event_id", "actor", "reason", "correlation_id", "causation_id",
                "idempotency_key", "patch", "document", "resolution"}
    assert by_entry(items) == written.expected
    settings = client.get(f"/v1/namespaces/{written.ns}/settings/history").json()["items"]
    assert {i["version"]: i.get("auth", NONE) for i in settings} == written.settings


def test_the_audit_trail_shows_it_as_json_csv_and_ndjson(written: Written,
                                                         client: httpx.Client) -> None:
    params = {"namespace": written.ns, "limit": 1000}
    page = client.get("/v1/audit", params=params).json()["items"]
    assert by_entry(page) == written.expected

    text = client.get("/v1/audit", params=params, headers={"Accept": "text/csv"}).text
    table = list(csv.reader(io.StringIO(text)))
    assert table[0][-2:] == ["patch", "auth"]
    cells = {(row[3], int(row[4])): row[-1] for row in table[1:]}
    assert all(" " not in cell for cell in cells.values())  # compact JSON
    assert {k: json.loads(v) if v else NONE for k, v in cells.items()} == written.expected

    lines = client.get("/v1/audit", params=params,
                       headers={"Accept": "application/x-ndjson"}).text.splitlines()
    assert by_entry([json.loads(line) for line in lines]) == written.expected


def test_the_event_feed_carries_it_in_each_cloudevents_data(written: Written,
                                                            client: httpx.Client) -> None:
    items = client.get("/v1/events", params={"namespace": written.ns,
                                             "limit": 1000}).json()["items"]
    assert by_entry([e["data"] for e in items]) == written.expected
    live = read_sse(client, {"namespace": written.ns, "after": 0}, len(items))
    assert [e for _, e in live] == items
    for event in items:  # its extension attributes are the CloudEvents spec's alone
        assert set(event) == {"specversion", "id", "source", "type", "subject", "time",
                              "datacontenttype", "data"}


def test_the_log_hashes_it_and_verifies(written: Written) -> None:
    events = rows(written.database_url,
                  "SELECT originator_id::text, originator_version, topic, state"
                  " FROM ssot_events ORDER BY notification_id")
    seen = {}
    for stream, version, topic, raw in events:
        state = orjson.loads(bytes(raw))
        if state["namespace"] != written.ns:
            continue
        seen[state["key"], version] = state["auth"] if state["auth"] is not None else NONE
        fields = {**state, "stream": stream, "version": version,
                  "type": TYPE_OF_TOPIC[topic]}
        assert chain.event_hash(fields) == state["hash"]
        if state["auth"] is not None:  # covered: without it, it would hash otherwise
            assert chain.event_hash({**fields, "auth": None}) != state["hash"]
    assert seen == written.expected

    done = ssot(written.database_url, "verify", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["events"] == len(events)


def test_the_views_equal_the_fold_of_the_log(written: Written) -> None:
    """The history rows ``ssot_append`` wrote, auth included, are what folding the log
    gives (``ssot check``); a changed auth in the history is drift."""
    done = ssot(written.database_url, "check", "--view", "entry_history",
                "--view", "current_state")
    assert done.returncode == 0, done.stdout + done.stderr
    with psycopg.connect(written.database_url, autocommit=True) as conn:
        conn.execute("UPDATE entry_history SET auth = %s WHERE namespace = %s AND key = 'a'"
                     " AND version = 3", (orjson.dumps(written.proxy).decode(), written.ns))
        try:
            drift = ssot(written.database_url, "check", "--view", "entry_history")
        finally:
            conn.execute("UPDATE entry_history SET auth = %s WHERE namespace = %s"
                         " AND key = 'a' AND version = 3",
                         (orjson.dumps(written.token).decode(), written.ns))
    assert drift.returncode == 1, drift.stdout + drift.stderr
    assert f"entry_history: namespace {written.ns}: key a version 3 differs" in drift.stdout


def test_ssot_replay_rebuilds_and_copies_the_history_with_it(written: Written) -> None:
    url, ns = written.database_url, written.ns
    history = TABLES["entry_history"]
    before = rows(url, history)
    done = ssot(url, "replay", "views", "--view", "entry_history")
    assert done.returncode == 0, done.stdout + done.stderr
    assert rows(url, history) == before
    [(cut,)] = rows(url, f"SELECT position FROM entry_history WHERE namespace = '{ns}'"
                         " AND key = 'a' AND version = 3")
    schema = f"auth_copy_{secrets.token_hex(4)}"
    try:
        done = ssot(url, "replay", "views", "--view", "entry_history", "--into", schema,
                    "--until", str(cut))
        assert done.returncode == 0, done.stdout + done.stderr
        copied = rows(url, f"SELECT key, version, auth FROM {schema}.entry_history"
                           f" WHERE namespace = '{ns}'")
        assert {(k, v): a if a is not None else NONE for k, v, a in copied} == {
            ("a", 1): NONE, ("a", 2): ADMIN, ("a", 3): written.token}
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                sql.Identifier(schema)))


def test_an_export_imported_elsewhere_keeps_it(written: Written, server_url: str,
                                               tmp_path: Path) -> None:
    out = tmp_path / "export.ndjson.gz"
    done = ssot(written.database_url, "export", "--out", str(out))
    assert done.returncode == 0, done.stderr
    name = f"ssot_auth_copy_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = psycopg.conninfo.conninfo_to_dict(server_url)
    parts["dbname"] = name
    copy = psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in parts.items()})
    try:
        imported = ssot(copy, "import", str(out))
        assert imported.returncode == 0, imported.stderr
        assert "chain verified" in imported.stdout
        for table in ("ssot_events", "entry_history", "entries"):
            assert rows(copy, TABLES[table]) == rows(written.database_url, TABLES[table]), \
                table
        auths = rows(copy, f"SELECT key, version, auth FROM entry_history"
                           f" WHERE namespace = '{written.ns}'")
        assert {(k, v): a if a is not None else NONE for k, v, a in auths} == \
            written.expected
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


def test_a_proof_holds_it_and_the_standalone_script_checks_it(
        written: Written, client: httpx.Client, tmp_path: Path) -> None:
    add_digest(written.database_url)  # leaves and a digest of the whole log, unsigned
    base = f"/v1/namespaces/{written.ns}/entries/a/proof"
    with_auth = client.get(base, params={"version": 4}).json()
    without = client.get(base, params={"version": 1}).json()
    assert with_auth["event"]["auth"] == written.proxy
    assert without["event"]["auth"] is None  # hashed as null (class version 5)
    for proof in (with_auth, without):
        assert check_proof(proof, tmp_path) == "OK"
    event = with_auth["event"]
    for changed in ({**event, "auth": written.token}, {**event, "auth": None},
                    {k: v for k, v in event.items() if k != "auth"},
                    {**without["event"], "auth": written.proxy}):
        assert check_proof({**with_auth, "event": changed}, tmp_path).startswith(
            "FAIL event:")


def check_proof(proof: dict[str, Any], tmp_path: Path) -> str:
    """ops/verify_proof.py's verdict on ``proof`` against the digest it names."""
    (tmp_path / "digest.json").write_text(json.dumps(proof["digest"]))
    done = subprocess.run([sys.executable, str(PROOF_SCRIPT), "-", "digest.json"],
                          input=json.dumps(proof), capture_output=True, text=True,
                          cwd=tmp_path, timeout=30)
    return done.stdout.strip()
