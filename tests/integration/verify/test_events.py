"""`ssot verify` (integrity/verify/) against tampering with events by direct SQL: each kind
found at its position and key with exit code 1, and a clean log verifies (CLI and HTTP
agree). The seeded log and the tampering: kit.py."""

from __future__ import annotations

import os
import subprocess
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from psycopg import sql

from nexus_ssot.ledger import chain
from nexus_ssot.ledger.addressing import stream_id
from nexus_ssot.ledger.commands import Put
from nexus_ssot.ledger.documents import Limits
from nexus_ssot.ledger.store import open_application
from nexus_ssot.ledger.writer import GroupCommitWriter
from tests.integration.conftest import AUTH, RunningServer, make_settings
from tests.integration.verify.kit import (
    OPS_AUTH,
    SSOT,
    Address,
    Conn,
    Seeded,
    context,
    first_problem,
    kinds,
    ssot_verify,
    state_at,
    swap_events,
    tampering,
    verified,
)

# --- a clean log ---------------------------------------------------------------------------


def test_a_clean_log_verifies_and_the_route_agrees(db: str, seeded: Seeded) -> None:
    done, report = ssot_verify(db, "--digests", str(seeded.published), key=seeded.key)
    assert done.returncode == 0, done.stdout + done.stderr
    assert report is not None and report["ok"] is True and report["problem_count"] == 0
    assert report["events"] == len(seeded.positions) and report["head"] == seeded.head
    assert report["digests_checked"] >= 4
    assert report["signatures_checked"] == report["digests_checked"] + \
        report["external_digests"]
    assert report["digested_to"] == seeded.head
    human = subprocess.run([SSOT, "verify", "--public-key", str(seeded.key)],
                           capture_output=True, text=True, timeout=120,
                           env={**os.environ, "SSOT_DATABASE_URL": db})
    assert human.returncode == 0 and "ok: no problem found" in human.stdout

    settings = make_settings(db, signing_key_file=seeded.key, digests=False)
    with RunningServer(settings) as server:
        r = httpx.get(f"{server.url}/v1/integrity/verify", timeout=60, headers=AUTH)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["ok"] is True and body["events"] == report["events"]
        assert body["signatures_checked"] == report["digests_checked"]
        half = httpx.get(f"{server.url}/v1/integrity/verify",
                         params={"from_position": 8, "to_position": 14}, timeout=60,
                         headers=AUTH).json()
        assert half["ok"] is True and (half["from_position"], half["to_position"]) == (8, 14)


# --- tampering with events ------------------------------------------------------------------




def test_one_changed_byte_of_an_event_is_found_with_its_field(db: str, seeded: Seeded
                                                                ) -> None:
    position = seeded.positions["cfg", "a", 2]
    with tampering(db) as conn:
        state = state_at(conn, position)
        at = state.index(b'"pool":20')
        conn.execute("UPDATE ssot_events SET state = %s WHERE notification_id = %s",
                     (state[:at + 8] + b"1" + state[at + 9:], position))  # 20 -> 21
    first = first_problem(db, seeded)
    assert (first["kind"], first["position"], first["field"]) == \
        ("event_altered", position, "document")
    assert (first["namespace"], first["key"], first["version"]) == ("cfg", "a", 2)


@pytest.mark.parametrize("change", ["changed", "removed", "nulled"])
def test_a_changed_or_removed_auth_is_found_with_its_field(db: str, seeded: Seeded,
                                                           change: str) -> None:
    position = seeded.positions["ops", "y", 2]
    with tampering(db) as conn:
        state = orjson.loads(state_at(conn, position))
        assert state["auth"] == OPS_AUTH
        if change == "changed":
            state["auth"] = {**OPS_AUTH, "on_behalf_of": "mallory"}
        elif change == "removed":
            del state["auth"]  # as if the event had been written before auth was
        else:
            state["auth"] = None
        conn.execute("UPDATE ssot_events SET state = %s WHERE notification_id = %s",
                     (orjson.dumps(state), position))
    first = first_problem(db, seeded)
    assert (first["kind"], first["position"], first["field"]) == \
        ("event_altered", position, "auth")
    assert (first["namespace"], first["key"], first["version"]) == ("ops", "y", 2)


def test_an_event_given_an_auth_it_never_had_is_found(db: str, seeded: Seeded) -> None:
    position = seeded.positions["cfg", "b", 2]
    with tampering(db) as conn:
        state = orjson.loads(state_at(conn, position))
        assert state["auth"] is None
        state["auth"] = OPS_AUTH
        conn.execute("UPDATE ssot_events SET state = %s WHERE notification_id = %s",
                     (orjson.dumps(state), position))
    first = first_problem(db, seeded)
    assert (first["kind"], first["position"], first["field"]) == \
        ("event_altered", position, "auth")


def test_a_byte_that_breaks_the_json_is_found(db: str, seeded: Seeded) -> None:
    position = seeded.positions["ops", "x", 1]
    with tampering(db) as conn:
        state = state_at(conn, position)
        conn.execute("UPDATE ssot_events SET state = %s WHERE notification_id = %s",
                     (state[:-1] + b"]", position))
    first = first_problem(db, seeded)
    assert (first["kind"], first["position"], first["field"]) == \
        ("event_altered", position, "state")
    assert (first["namespace"], first["key"]) == ("ops", "x")  # from the history copy


def test_an_event_rewritten_with_a_recomputed_hash_is_found(db: str, seeded: Seeded
                                                              ) -> None:
    """Its own hash checks out: the next version's link, the history copy and the
    digests tell."""
    position = seeded.positions["cfg", "b", 2]
    with tampering(db) as conn:
        state = orjson.loads(state_at(conn, position))
        state["document"] = {"n": 200}
        state["hash"] = chain.event_hash({
            **state, "stream": str(stream_id("cfg", "b")), "version": 2,
            "type": "entry.updated"})
        conn.execute("UPDATE ssot_events SET state = %s WHERE notification_id = %s",
                     (orjson.dumps(state), position))
    first = first_problem(db, seeded)
    assert (first["kind"], first["position"], first["field"]) == \
        ("event_altered", position, "document")
    assert "recomputed hash" in first["detail"]


def test_a_changed_commit_time_is_found(db: str, seeded: Seeded) -> None:
    position = seeded.positions["cfg", "c", 2]
    with tampering(db) as conn:
        conn.execute("UPDATE ssot_events SET recorded_at = recorded_at + interval '1 ms'"
                     " WHERE notification_id = %s", (position,))
    first = first_problem(db, seeded)
    assert (first["kind"], first["position"], first["field"]) == \
        ("event_altered", position, "recorded_at")
    assert (first["key"], first["version"]) == ("c", 2)


def test_a_commit_time_changed_in_both_copies_is_found_by_the_digests(db: str,
                                                                      seeded: Seeded) -> None:
    position = seeded.positions["cfg", "c", 2]
    with tampering(db) as conn:
        conn.execute("UPDATE ssot_events SET recorded_at = recorded_at + interval '1 ms'"
                     " WHERE notification_id = %s", (position,))
        conn.execute("UPDATE entry_history SET recorded_at = recorded_at + interval '1 ms'"
                     " WHERE position = %s", (position,))
    first = first_problem(db, seeded)
    assert (first["kind"], first["position"], first["field"]) == \
        ("event_altered", position, "recorded_at")
    assert "Merkle leaf" in first["detail"]


def test_an_event_deleted_in_the_middle_of_a_stream_is_found(db: str, seeded: Seeded
                                                             ) -> None:
    position = seeded.positions["cfg", "a", 2]
    with tampering(db) as conn:
        conn.execute("DELETE FROM ssot_events WHERE notification_id = %s", (position,))
    report = verified(db, key=seeded.key)
    assert report["ok"] is False, report
    first = report["first_problem"]
    assert (first["kind"], first["position"]) == ("event_missing", position)
    assert (first["namespace"], first["key"], first["version"]) == ("cfg", "a", 2)
    # the digests after it no longer match, but that is explained by the missing event
    assert "digest_altered" not in kinds(report)


def test_the_deleted_last_event_of_a_stream_is_found(db: str, seeded: Seeded) -> None:
    position = seeded.positions["cfg", "b", 4]
    with tampering(db) as conn:
        conn.execute("DELETE FROM ssot_events WHERE notification_id = %s", (position,))
    first = first_problem(db, seeded)
    assert (first["kind"], first["position"]) == ("event_missing", position)
    assert (first["namespace"], first["key"], first["version"]) == ("cfg", "b", 4)


def test_an_event_deleted_with_its_copies_is_found_by_the_digests(db: str, seeded: Seeded
                                                                  ) -> None:
    position = seeded.positions["cfg", "b", 4]
    with tampering(db) as conn:
        conn.execute("DELETE FROM ssot_events WHERE notification_id = %s", (position,))
        conn.execute("DELETE FROM entry_history WHERE position = %s", (position,))
        conn.execute("UPDATE entries SET version = 3, position = %s, hash = %s"
                     " WHERE namespace = 'cfg' AND key = 'b'",
                     (seeded.positions["cfg", "b", 3], None))
    first = first_problem(db, seeded)
    assert (first["kind"], first["position"]) == ("event_missing", position)
    assert "digests cover" in first["detail"]


def _forge(conn: Conn, position: int, namespace: str, key: str, version: int,
           document: Any, prev_hash: str | None) -> dict[str, Any]:
    """An event as the writer would make it, inserted at ``position`` with its copies."""
    fields: dict[str, Any] = {
        "event_id": str(uuid.uuid4()), "namespace": namespace, "key": key,
        "document": document, "patch": [{"op": "add", "path": "", "value": document}],
        "actor": "mallory", "reason": None, "correlation_id": "forged",
        "causation_id": None, "idempotency_key": None, "resolution": None,
        "prev_hash": prev_hash}
    kind = "entry.created" if version == 1 else "entry.updated"
    timestamp = datetime.now(UTC).isoformat()
    fields["hash"] = chain.event_hash({
        **fields, "timestamp": timestamp, "auth": None, "class_version": 5,
        "stream": str(stream_id(namespace, key)), "version": version, "type": kind})
    state = {"timestamp": timestamp, **fields, "auth": None, "class_version": 5}
    topic = "nexus_ssot.ledger.domain:" + ("EntryCreated" if version == 1 else "EntryUpdated")
    conn.execute(
        "INSERT INTO ssot_events (originator_id, originator_version, topic, state,"
        " notification_id) VALUES (%s, %s, %s, %s, %s)",
        (stream_id(namespace, key), version, topic, orjson.dumps(state), position))
    conn.execute(
        "INSERT INTO entry_history (namespace, key, version, position, recorded_at,"
        " event_type, event_id, actor, correlation_id, patch, document, prev_hash, hash)"
        " SELECT %s, %s, %s, %s, recorded_at, %s, %s, 'mallory', 'forged', %s, %s, %s, %s"
        " FROM ssot_events WHERE notification_id = %s",
        (namespace, key, version, position, kind, fields["event_id"],
         orjson.dumps(fields["patch"]).decode(), orjson.dumps(document).decode(),
         prev_hash, fields["hash"], position))
    conn.execute(
        "INSERT INTO entries (namespace, key, version, position, recorded_at, document,"
        " deleted, hash) SELECT %s, %s, %s, %s, recorded_at, %s, false, %s FROM ssot_events"
        " WHERE notification_id = %s ON CONFLICT (namespace, key) DO UPDATE SET"
        " version = EXCLUDED.version, position = EXCLUDED.position,"
        " document = EXCLUDED.document, hash = EXCLUDED.hash",
        (namespace, key, version, position, orjson.dumps(document).decode(), fields["hash"],
         position))
    return fields


def test_a_forged_event_with_a_recomputed_chain_is_caught_by_the_digests(
        db: str, seeded: Seeded) -> None:
    """A valid chain, history and current state: only the Merkle leaves know better."""
    gap = seeded.gaps[1]
    with tampering(db) as conn:
        _forge(conn, gap, "cfg", "forged", 1, {"admin": True}, None)
    report = verified(db, key=seeded.key)
    assert report["ok"] is False, report
    first = report["first_problem"]
    assert (first["kind"], first["position"]) == ("event_inserted", gap)
    assert (first["namespace"], first["key"], first["version"]) == ("cfg", "forged", 1)
    assert "no leaf" in first["detail"]
    assert "digest_altered" not in kinds(report)  # the roots differ because of it


def test_a_forged_next_version_without_copies_is_found(db: str, seeded: Seeded) -> None:
    gap = seeded.gaps[2]  # after ops/y version 1, before its version 2
    with tampering(db) as conn:
        last = orjson.loads(state_at(conn, seeded.positions["ops", "z", 1]))
        _forge(conn, gap, "ops", "z", 2, {"evil": 1}, last["hash"])
        conn.execute("DELETE FROM entry_history WHERE position = %s", (gap,))
        conn.execute("UPDATE entries SET version = 1, position = %s, hash = %s WHERE"
                     " namespace = 'ops' AND key = 'z'",
                     (seeded.positions["ops", "z", 1], last["hash"]))
    first = first_problem(db, seeded)
    assert (first["kind"], first["position"]) == ("event_inserted", gap)
    assert (first["key"], first["version"]) == ("z", 2)




@pytest.mark.parametrize("one, other", [
    (("cfg", "a", 2), ("cfg", "c", 1)),  # two streams
    (("cfg", "b", 2), ("cfg", "b", 3)),  # one stream: versions out of order
])
def test_two_swapped_events_are_found(db: str, seeded: Seeded, one: Address,
                                      other: Address) -> None:
    p, q = seeded.positions[one], seeded.positions[other]
    with tampering(db) as conn:
        swap_events(conn, p, q)
    report = verified(db, key=seeded.key)
    assert report["ok"] is False, report
    first = report["first_problem"]
    assert (first["kind"], first["position"], first["other_position"]) == \
        ("events_reordered", min(p, q), max(p, q))
    assert first["namespace"] == "cfg"
    assert report["problem_count"] == 1, report["problems"]


def test_events_swapped_with_their_copies_are_found_by_the_digests(db: str, seeded: Seeded
                                                                   ) -> None:
    p, q = seeded.positions["cfg", "a", 3], seeded.positions["ops", "y", 1]
    with tampering(db) as conn:
        swap_events(conn, p, q)
        for table, column in (("entry_history", "position"), ("entries", "position")):
            for a, b in ((p, -1), (q, p), (-1, q)):
                conn.execute(sql.SQL("UPDATE {} SET {} = %s WHERE {} = %s").format(
                    sql.Identifier(table), sql.Identifier(column), sql.Identifier(column)),
                    (b, a))
    report = verified(db, key=seeded.key)
    assert report["ok"] is False, report
    first = report["first_problem"]
    assert (first["kind"], first["position"], first["other_position"]) == \
        ("events_reordered", min(p, q), max(p, q))
    assert "digested" in first["detail"]
    assert report["problem_count"] == 1, report["problems"]


def test_a_changed_prev_hash_breaks_the_chain(db: str, seeded: Seeded) -> None:
    """The forger recomputed the event's hash and its copies: the link still tells."""
    position = seeded.positions["cfg", "a", 3]
    with tampering(db) as conn:
        state = orjson.loads(state_at(conn, position))
        state["prev_hash"] = "0" * 64
        state["hash"] = chain.event_hash({
            **state, "stream": str(stream_id("cfg", "a")), "version": 3,
            "type": "entry.patched"})
        conn.execute("UPDATE ssot_events SET state = %s WHERE notification_id = %s",
                     (orjson.dumps(state), position))
        conn.execute("UPDATE entry_history SET prev_hash = %s, hash = %s"
                     " WHERE position = %s", (state["prev_hash"], state["hash"], position))
    first = first_problem(db, seeded)
    assert (first["kind"], first["position"]) == ("chain_broken", position)
    assert (first["key"], first["version"]) == ("a", 3)


def test_an_unchained_event_is_reported(db: str, seeded: Seeded) -> None:
    app = open_application(db, pool_size=1)
    try:
        writer = GroupCommitWriter(app, lambda _ns: Limits(), hash_chain=False)
        outcome = writer.write_batch([(Put("ops", "plain", document={}), context(),
                                       None)])[0].result()
    finally:
        app.close()
    report = verified(db, key=seeded.key)
    assert report["ok"] is False, report
    first = report["first_problem"]
    assert (first["kind"], first["position"], first["key"]) == \
        ("unchained_event", outcome.position, "plain")
    assert any("no digest covers" in n for n in report["notes"])
