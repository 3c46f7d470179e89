"""The `ssot` CLI, run as a process against a running API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

SSOT = str(Path(sys.executable).parent / "ssot")


def ssot(api: Any, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SSOT_URL": api.url}
    return subprocess.run([SSOT, *args], input=stdin, capture_output=True, text=True, env=env,
                          timeout=60)


def test_put_get_ls_history_rm_round_trip(api: Any, ns: str, tmp_path: Path) -> None:
    doc = tmp_path / "doc.json"
    doc.write_text('{"url": "pg://a", "pool": 5}')
    put = ssot(api, "put", f"{ns}/services/db", str(doc), "--reason", "first")
    assert put.returncode == 0, put.stderr
    assert put.stdout.startswith(f"created {ns}/services/db version 1 (position ")
    again = ssot(api, "--json", "put", f"{ns}/services/db", "-", "--if-match", "1",
                 stdin='{"url": "pg://b"}')
    assert again.returncode == 0 and json.loads(again.stdout)["version"] == 2
    got = json.loads(ssot(api, "--json", "get", f"{ns}/services/db", "--version", "1").stdout)
    assert got["document"] == {"url": "pg://a", "pool": 5}
    table = ssot(api, "ls", ns, "--prefix", "services/").stdout
    assert "services/db" in table and "VERSION" in table
    listed = json.loads(ssot(api, "--json", "ls", ns).stdout)
    assert [e["key"] for e in listed] == ["services/db"]
    history = json.loads(ssot(api, "--json", "history", f"{ns}/services/db").stdout)
    assert [e["reason"] for e in history] == ["first", None]
    assert "replace /url" in ssot(api, "history", f"{ns}/services/db").stdout
    rm = ssot(api, "rm", f"{ns}/services/db", "--if-match", "2")
    assert rm.returncode == 0 and "version 3" in rm.stdout


def test_patch_from_the_shell(api: Any, ns: str) -> None:
    ssot(api, "put", f"{ns}/k", "-", stdin='{"a": 1}')
    merged = ssot(api, "--json", "patch", f"{ns}/k", "-", stdin='{"b": 2}')
    assert json.loads(merged.stdout)["document"] == {"a": 1, "b": 2}
    jp = ssot(api, "--json", "patch", f"{ns}/k", "-", "--json-patch",
              stdin='[{"op": "remove", "path": "/a"}]')
    assert json.loads(jp.stdout)["document"] == {"b": 2}


def test_failures_print_one_line_and_exit_non_zero(api: Any, ns: str) -> None:
    ssot(api, "put", f"{ns}/k", "-", stdin="{}")
    missing = ssot(api, "get", f"{ns}/nope")
    assert missing.returncode == 3
    assert missing.stderr.strip().splitlines() == [
        f"error: entry_not_found: entry {ns}/nope does not exist"]
    stale = ssot(api, "put", f"{ns}/k", "-", "--if-match", "5", stdin="{}")
    assert stale.returncode == 4 and stale.stderr.startswith("error: version_conflict:")
    bad = ssot(api, "put", f"{ns}/k", "-", stdin="{not json")
    assert bad.returncode == 2 and bad.stderr.startswith("error: malformed_json:")
    usage = ssot(api, "get", "no-slash")
    assert usage.returncode == 2
    down = subprocess.run([SSOT, "--url", "http://127.0.0.1:9", "get", f"{ns}/k"],
                          capture_output=True, text=True, timeout=60)
    assert down.returncode == 5 and down.stderr.startswith("error: unreachable:")


def test_a_diff_ends_with_a_newline_as_every_output_does(api: Any, ns: str) -> None:
    ssot(api, "put", f"{ns}/k", "-", stdin='{"a": 1}')
    ssot(api, "put", f"{ns}/k", "-", stdin='{"a": 2}')
    outputs = [ssot(api, "diff", f"{ns}/k", "1", "2"), ssot(api, "get", f"{ns}/k"),
               ssot(api, "history", f"{ns}/k"), ssot(api, "--json", "ls", ns)]
    assert all(o.returncode == 0 and o.stdout.endswith("\n") for o in outputs), outputs
    assert '-  "a": 1' in outputs[0].stdout and '+  "a": 2' in outputs[0].stdout
    same = ssot(api, "diff", f"{ns}/k", "2", "2")  # nothing changed: no blank line either
    assert (same.returncode, same.stdout) == (0, "")


def test_time_travel_from_the_shell(api: Any, ns: str) -> None:
    first = json.loads(ssot(api, "--json", "put", f"{ns}/k", "-", stdin='{"v": 1}').stdout)
    ssot(api, "put", f"{ns}/k", "-", stdin='{"v": 2}')
    then = json.loads(ssot(api, "--json", "get", f"{ns}/k", "--as-of",
                           first["recorded_at"]).stdout)
    assert then["document"] == {"v": 1} and then["version"] == 1
    at = json.loads(ssot(api, "--json", "get", f"{ns}/k", "--position",
                         str(first["position"])).stdout)
    assert at == then
    # before its first write the namespace did not exist
    listed = ssot(api, "--json", "ls", ns, "--position", str(first["position"] - 1))
    assert listed.returncode == 3 and listed.stderr.startswith(
        f"error: namespace_not_found: namespace {ns} did not exist yet at position ")
    before = ssot(api, "get", f"{ns}/k", "--position", str(first["position"] - 1))
    assert before.returncode == 3 and "did not exist yet" in before.stderr
    # read-your-writes: a state that includes a write's position; none beyond the head
    written = json.loads(ssot(api, "--json", "get", f"{ns}/k", "--min-position",
                              str(first["position"])).stdout)
    assert written["document"] == {"v": 2}
    beyond = ssot(api, "get", f"{ns}/k", "--min-position", str(2**62))
    assert beyond.returncode == 2 and beyond.stderr.startswith(
        "error: position_beyond_head: min_position ")
    assert json.loads(ssot(api, "--json", "ls", ns, "--prefix", "other/").stdout) == []
