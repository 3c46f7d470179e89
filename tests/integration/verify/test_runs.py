"""`ssot verify` runs: resumed from a checkpoint or a position they give the same answer,
the route agrees and is bounded, a namespace is verified alone, bad input is refused and
changes nothing, and a run reads one snapshot while writes go on. The seeded log:
kit.py."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from nexus_ssot.api import verify as verify_route
from nexus_ssot.integrity import verify
from nexus_ssot.ledger.commands import Put
from nexus_ssot.ledger.documents import Limits
from nexus_ssot.ledger.errors import InvalidInput
from nexus_ssot.ledger.store import open_application
from nexus_ssot.ledger.writer import GroupCommitWriter
from tests.integration.conftest import AUTH, RunningServer, make_settings
from tests.integration.verify.kit import (
    SSOT,
    Seeded,
    cli_first_problem,
    context,
    ssot_verify,
    state_at,
    swap_events,
    tampering,
)

# --- resuming, the route, bad input -----------------------------------------------------------


def test_resuming_gives_the_same_answer(db: str, seeded: Seeded, tmp_path: Path) -> None:
    missing = seeded.positions["cfg", "a", 2]
    swapped = (seeded.positions["ops", "y", 1], seeded.positions["cfg", "b", 3])
    with tampering(db) as conn:
        conn.execute("DELETE FROM ssot_events WHERE notification_id = %s", (missing,))
        swap_events(conn, *swapped)
    _, whole = ssot_verify(db, key=seeded.key)
    assert whole is not None
    expected = [(p["kind"], p["position"]) for p in whole["problems"]]
    assert expected[0] == ("event_missing", missing)
    assert ("events_reordered", min(swapped)) in expected
    for stop in (missing - 1, missing + 1, max(swapped) + 1):
        checkpoint = tmp_path / f"at{stop}.json"
        done, part = ssot_verify(db, "--to-position", str(stop), "--checkpoint",
                                 str(checkpoint), key=seeded.key)
        assert part is not None and part["to_position"] == stop
        done, rest = ssot_verify(db, "--checkpoint", str(checkpoint), key=seeded.key)
        assert done.returncode == 1 and rest is not None
        assert rest["resumed_from"] == stop
        assert [(p["kind"], p["position"]) for p in rest["problems"]] == expected, stop
        assert rest["events_total"] == whole["events"]
    _, later = ssot_verify(db, "--from-position", str(missing - 1), key=seeded.key)
    assert later is not None and later["first_problem"]["position"] == missing


def test_an_interrupted_run_resumes_from_its_last_checkpoint(db: str, seeded: Seeded,
                                                             tmp_path: Path) -> None:
    position = seeded.positions["ops", "y", 2]
    with tampering(db) as conn:
        conn.execute("DELETE FROM ssot_events WHERE notification_id = %s", (position,))
    whole = verify.verify(db, verify.Options())
    checkpoint = tmp_path / "run.json"
    seen: list[int] = []

    def interrupt(done: int, total: int, at: int) -> None:
        seen.append(at)
        if len(seen) == 3:
            raise KeyboardInterrupt

    options = verify.Options(checkpoint=checkpoint, checkpoint_every=1, fetch_size=2)
    with pytest.raises(KeyboardInterrupt):
        verify.verify(db, options, progress=interrupt)
    saved = orjson.loads(checkpoint.read_bytes())
    assert saved["position"] == seen[1]  # the last batch before the interruption
    resumed = verify.verify(db, options)
    assert resumed.resumed_from == seen[1]
    assert [p.as_dict() for p in resumed.problems] == [p.as_dict() for p in whole.problems]
    assert whole.first is not None and whole.first.position == position
    with pytest.raises(InvalidInput) as refused:
        verify.verify(db, verify.Options(checkpoint=checkpoint, namespace="cfg"))
    assert refused.value.field == "namespace"


def test_the_route_agrees_and_is_bounded(db: str, seeded: Seeded,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    position = seeded.positions["cfg", "c", 1]
    with tampering(db) as conn:
        state = state_at(conn, position)
        conn.execute("UPDATE ssot_events SET state = %s WHERE notification_id = %s",
                     (state.replace(b'"info"', b'"INFO"', 1), position))
    cli = cli_first_problem(db, seeded)
    settings = make_settings(db, signing_key_file=seeded.key, digests=False)
    with RunningServer(settings) as server:
        get = route_get(server.url)
        body = get().json()
        assert body["ok"] is False and body["first_problem"] == cli
        assert get(from_position=position - 1, to_position=position).json()[
            "first_problem"]["position"] == position
        assert get(from_position=position).json()["ok"] is True
        monkeypatch.setattr(verify_route, "MAX_EVENTS", 5)
        page = get().json()
        assert page["events"] == 5 and page["next_from_position"] == page["to_position"]
        too_many = get(to_position=seeded.head)
        assert too_many.status_code == 400
        assert too_many.json()["code"] == "range_too_large"
        assert too_many.json()["field"] == "to_position"
        backwards = get(from_position=5, to_position=2)
        assert backwards.status_code == 400 and backwards.json()["field"] == "to_position"
        bad = get(namespace="Not Valid")
        assert bad.status_code == 400 and bad.json()["field"] == "namespace"
        negative = get(from_position=-1)
        assert negative.status_code == 400 and negative.json()["field"] == "from_position"


def route_get(base: str) -> Any:
    def get(**params: Any) -> httpx.Response:
        return httpx.get(f"{base}/v1/integrity/verify", params=params, timeout=60, headers=AUTH)
    return get


def test_a_namespace_is_verified_alone(db: str, seeded: Seeded) -> None:
    position = seeded.positions["cfg", "a", 2]
    with tampering(db) as conn:
        state = state_at(conn, position)
        conn.execute("UPDATE ssot_events SET state = %s WHERE notification_id = %s",
                     (state.replace(b'"pool":20', b'"pool":99', 1), position))
    done, report = ssot_verify(db, "--namespace", "ops", key=seeded.key)
    assert done.returncode == 0, report  # the tampering is in cfg
    assert report is not None and report["streams"] == 3
    first = cli_first_problem(db, seeded, "--namespace", "cfg")
    assert (first["kind"], first["position"]) == ("event_altered", position)


def test_bad_input_is_refused_and_changes_nothing(db: str, seeded: Seeded,
                                                  tmp_path: Path) -> None:
    bad = tmp_path / "bad.ndjson"
    lines = seeded.published.read_text().splitlines()
    bad.write_text(lines[0] + "\n" + lines[1].replace('"root":"', '"root":"zz') + "\n")
    done, _ = ssot_verify(db, "--digests", str(bad))
    assert done.returncode == 2
    assert "--digests" in done.stderr and "line 2" in done.stderr and "root" in done.stderr
    done, _ = ssot_verify(db, "--digests", str(tmp_path / "absent.ndjson"))
    assert done.returncode == 2 and "cannot be read" in done.stderr
    key = tmp_path / "key.pem"
    key.write_text("not a key")
    done, _ = ssot_verify(db, "--public-key", str(key))
    assert done.returncode == 2 and "--public-key" in done.stderr
    done, _ = ssot_verify(db, "--namespace", "Bad Name")
    assert done.returncode == 2 and "--namespace" in done.stderr
    done, _ = ssot_verify(db, "--from-position", "9", "--to-position", "3")
    assert done.returncode == 2 and "--to-position" in done.stderr
    checkpoint = tmp_path / "cp.json"
    checkpoint.write_text('{"format": "something else"}')
    done, _ = ssot_verify(db, "--checkpoint", str(checkpoint))
    assert done.returncode == 2 and "--checkpoint" in done.stderr
    assert checkpoint.read_text() == '{"format": "something else"}'
    valid = tmp_path / "valid.json"
    ssot_verify(db, "--checkpoint", str(valid), "--to-position", "4")
    done, _ = ssot_verify(db, "--checkpoint", str(valid), "--from-position", "2")
    assert done.returncode == 2 and "--from-position" in done.stderr
    down = subprocess.run([SSOT, "verify"], capture_output=True, text=True, timeout=60,
                          env={**os.environ,
                               "SSOT_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/x"})
    assert down.returncode == 5 and down.stderr.startswith("error: unreachable:")
    done, report = ssot_verify(db, key=seeded.key)
    assert done.returncode == 0 and report is not None and report["ok"]


def test_the_published_digests_file_is_parsed_strictly(seeded: Seeded) -> None:
    good = orjson.loads(seeded.published.read_text().splitlines()[0])
    assert verify.parse_published_digest(good).seq == 1
    cases: list[tuple[dict[str, Any], str]] = [
        ({"seq": 0}, "seq"), ({"root": "ab"}, "root"),
        ({"recorded_at": "2026-01-01T00:00:00"}, "recorded_at"), ({"prev": 5}, "prev"),
        ({"key_id": 3}, "key_id")]
    for change, member in cases:
        with pytest.raises(ValueError, match=member):
            verify.parse_published_digest({**good, **change})


def test_verify_reads_in_one_snapshot_while_writes_go_on(db: str, seeded: Seeded) -> None:
    app = open_application(db, pool_size=1)
    writer = GroupCommitWriter(app, lambda _ns: Limits())
    stop = threading.Event()

    def write() -> None:
        i = 0
        while not stop.is_set():
            writer.write_batch([(Put("ops", f"live/{i % 7}", document={"i": i}),
                                 context(), None)])[0].result()
            i += 1

    thread = threading.Thread(target=write)
    thread.start()
    try:
        reports = [verify.verify(db) for _ in range(3)]
    finally:
        stop.set()
        thread.join()
        app.close()
    for report in reports:
        assert report.ok, [p.describe() for p in report.problems]
