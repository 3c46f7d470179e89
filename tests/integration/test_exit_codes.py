"""Every ``ssot`` command, run into each class of error it can meet, exits with the code
of the one table (docs/operations.md#exit-codes) and says why in one line on stderr,
``error: <code>: <message>``: a bad option (2), something that does not exist (3), a
precondition that fails (4), and what it needs not configured or not reachable (5) — the
API at a closed port, no database configured, the database and NATS at closed ports.

The matrix runs in process (click's runner, through the same ``Ssot.main`` a process
enters; a process per case cost a minute of both cores), and the cases the issue named,
each as a process of its own, prove the wiring end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
from click.testing import CliRunner

from nexus_ssot.ops.cli import main
from tests.integration.conftest import free_port

SSOT = str(Path(sys.executable).parent / "ssot")

USAGE, NOT_FOUND, PRECONDITION, UNAVAILABLE = 2, 3, 4, 5


class Case(NamedTuple):
    where: str  # "api": the test's server; "down": --url at a closed port; "unset": no
    #             database or NATS configured; "closed": both configured at closed ports
    args: tuple[str, ...]
    exit: int
    code: str  # the code on the error line


def case(where: str, exit: int, code: str, *args: str) -> Case:
    return Case(where, args, exit, code)


#: The commands on the API: each into each class it can meet.
HTTP_COMMANDS: list[Case] = [
    case("api", USAGE, "usage", "put", "{ns}/k", "{doc}", "--if-match", "one"),
    case("api", PRECONDITION, "version_conflict", "put", "{ns}/k", "{doc}", "--if-match", "9"),
    case("down", UNAVAILABLE, "unreachable", "put", "{ns}/k", "{doc}"),
    case("api", USAGE, "usage", "patch", "no-slash", "{doc}"),
    case("api", NOT_FOUND, "entry_not_found", "patch", "{ns}/missing", "{doc}"),
    case("api", PRECONDITION, "version_conflict", "patch", "{ns}/k", "{doc}", "--if-match", "9"),
    case("down", UNAVAILABLE, "unreachable", "patch", "{ns}/k", "{doc}"),
    case("api", USAGE, "usage", "get", "{ns}/k", "--as-of", "2026-01-01T00:00"),
    case("api", NOT_FOUND, "entry_not_found", "get", "{ns}/missing"),
    case("down", UNAVAILABLE, "unreachable", "get", "{ns}/k"),
    case("api", USAGE, "usage", "rm"),
    case("api", NOT_FOUND, "entry_not_found", "rm", "{ns}/missing"),
    case("api", PRECONDITION, "version_conflict", "rm", "{ns}/k", "--if-match", "9"),
    case("down", UNAVAILABLE, "unreachable", "rm", "{ns}/k"),
    case("api", USAGE, "usage", "revert", "{ns}/k", "--as-of", "yesterday"),
    case("api", NOT_FOUND, "version_not_found", "revert", "{ns}/missing", "--to", "1"),
    case("api", PRECONDITION, "version_conflict", "revert", "{ns}/k", "--to", "1",
         "--if-match", "9"),
    case("down", UNAVAILABLE, "unreachable", "revert", "{ns}/k", "--to", "1"),
    case("api", USAGE, "usage", "batch", "{tmp}/no-such-file.json"),
    case("api", PRECONDITION, "version_conflict", "batch", "{stale_batch}"),
    case("down", UNAVAILABLE, "unreachable", "batch", "{stale_batch}"),
    case("api", USAGE, "usage", "history", "{ns}/k", "--limit", "many"),
    case("api", NOT_FOUND, "entry_not_found", "history", "{ns}/missing"),
    case("down", UNAVAILABLE, "unreachable", "history", "{ns}/k"),
    case("api", USAGE, "usage", "diff", "{ns}/k", "first", "last"),
    case("api", NOT_FOUND, "version_not_found", "diff", "{ns}/missing", "0", "1"),
    case("down", UNAVAILABLE, "unreachable", "diff", "{ns}/k", "0", "1"),
    # a position no write has returned is refused by the server, not answered as today
    case("api", USAGE, "position_beyond_head", "ls", "{ns}", "--position", "99999999999"),
    case("api", NOT_FOUND, "namespace_not_found", "ls", "{ns}-missing"),
    case("down", UNAVAILABLE, "unreachable", "ls"),
    case("api", USAGE, "usage", "namespace", "show"),
    case("api", NOT_FOUND, "namespace_not_found", "namespace", "show", "{ns}-missing"),
    case("down", UNAVAILABLE, "unreachable", "namespace", "show", "{ns}"),
    case("api", USAGE, "usage", "namespace", "set", "{ns}", "--conflict-policy", "maybe"),
    case("api", PRECONDITION, "version_conflict", "namespace", "set", "{ns}",
         "--description", "d", "--if-match", "9"),
    case("down", UNAVAILABLE, "unreachable", "namespace", "set", "{ns}", "--description", "d"),
    case("api", USAGE, "usage", "restore", "{ns}"),
    case("down", UNAVAILABLE, "unreachable", "restore", "{ns}", "--position", "1",
         "--dry-run"),
    case("api", USAGE, "usage", "watch", "{ns}", "--after", "start"),
    case("down", UNAVAILABLE, "unreachable", "watch", "{ns}"),
    case("api", USAGE, "usage", "audit", "--since", "2026-01-01"),
    case("down", UNAVAILABLE, "unreachable", "audit"),
    case("down", UNAVAILABLE, "unreachable", "audit", "--format", "csv"),
    case("api", USAGE, "usage", "token", "create"),
    case("down", UNAVAILABLE, "unreachable", "token", "create", "someone"),
    case("api", USAGE, "usage", "token", "list", "--all"),
    case("down", UNAVAILABLE, "unreachable", "token", "list"),
    case("api", NOT_FOUND, "token_not_found", "token", "revoke", "0123456789abcdef"),
    case("down", UNAVAILABLE, "unreachable", "token", "revoke", "0123456789abcdef"),
    case("api", USAGE, "usage", "policy", "put", "p"),
    case("api", PRECONDITION, "version_conflict", "policy", "put", "{ns}", "{policy}",
         "--if-match", "9"),
    case("down", UNAVAILABLE, "unreachable", "policy", "put", "{ns}", "{policy}"),
    case("api", USAGE, "usage", "policy", "show", "p", "--version", "latest"),
    case("api", NOT_FOUND, "policy_not_found", "policy", "show", "{ns}-missing"),
    case("down", UNAVAILABLE, "unreachable", "policy", "show", "{ns}"),
    case("api", USAGE, "usage", "policy", "ls", "extra"),
    case("down", UNAVAILABLE, "unreachable", "policy", "ls"),
    case("api", USAGE, "usage", "policy", "rm"),
    # a policy that does not exist cannot be removed: If-Match: * is implied (412)
    case("api", NOT_FOUND, "policy_not_found", "policy", "rm", "{ns}-missing"),
    case("down", UNAVAILABLE, "unreachable", "policy", "rm", "{ns}"),
    case("api", USAGE, "usage", "policy", "history"),
    case("down", UNAVAILABLE, "unreachable", "policy", "history", "{ns}"),
    case("api", USAGE, "usage", "whoami", "--as", "root"),
    case("down", UNAVAILABLE, "unreachable", "whoami"),
    case("api", USAGE, "usage", "explain", "read"),
    case("down", UNAVAILABLE, "unreachable", "explain", "read", "{ns}/k"),
]

#: The commands on the database (and NATS) directly, and the ledger's processes.
DATABASE_COMMANDS: list[Case] = [
    c for args, usage in (
        (("export", "--out", "{tmp}/x.ndjson.gz"), ("export",)),
        (("import", "{doc}"), ("import",)),
        (("verify",), ("verify", "--from-position", "2", "--to-position", "1")),
        (("check",), ("check", "--view", "nope")),
        (("replay", "views"), ("replay", "views", "--until", "1")),
        (("replay", "status"), ("replay", "status", "--bogus")),
        (("reconcile",), ("reconcile", "--from-position", "-1")),
        (("access", "nats-config"), ("access", "nats-config", "--service-user", "s")),
        (("digest",), ("digest", "--bogus")),
        (("broadcast",), ("broadcast", "--bogus")),
        (("project",), ("project", "--bogus")),
        (("writer", "--socket", "{tmp}/writer.sock"), ("writer",)),
        (("migrate",), ("migrate", "--grant-to")),
    )
    for c in (case("unset", USAGE, "usage", *usage),
              case("unset", UNAVAILABLE, "not_configured", *args),
              case("closed", UNAVAILABLE, "unreachable", *args))
] + [
    case("unset", USAGE, "usage", "serve", "--workers", "0"),
    case("unset", USAGE, "usage", "env", "--bogus"),
    case("unset", UNAVAILABLE, "not_running", "env"),
    case("unset", USAGE, "usage", "chaos", "--duration", "1"),
    case("unset", USAGE, "usage", "--bogus"),
    case("unset", USAGE, "usage", "bogus"),
]


@pytest.fixture()
def places(api: Any, client: httpx.Client, ns: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """What the cases name: the test's namespace with entry ``k`` at version 1 and a
    policy, files to give, a closed port, and an empty data dir (nothing to find there)."""
    client.put(f"/v1/namespaces/{ns}/entries/k", json={"a": 1}).raise_for_status()
    client.put(f"/v1/access/policies/{ns}", json={"rules": []}).raise_for_status()
    doc, policy, stale = tmp_path / "doc.json", tmp_path / "policy.json", tmp_path / "b.json"
    doc.write_text('{"a": 2}')
    policy.write_text('{"rules": []}')
    stale.write_text(json.dumps([{"op": "put", "namespace": ns, "key": "k", "document": {},
                                  "if_match": 9}]))
    (tmp_path / "data").mkdir()
    yield {"ns": ns, "doc": str(doc), "policy": str(policy), "stale_batch": str(stale),
           "tmp": str(tmp_path), "port": str(free_port()), "api": api.url,
           "closed": f"127.0.0.1:{free_port()}"}


def environment(where: str, places: dict[str, str]) -> dict[str, str]:
    """The SSOT_* settings of a case: no database or NATS but at closed ports ("closed"),
    the API of the test, and the empty data dir."""
    closed = places["closed"]
    env = {"SSOT_DATA_DIR": f"{places['tmp']}/data", "SSOT_URL": places["api"]}
    if where == "closed":
        env |= {"SSOT_DATABASE_URL": f"postgresql://root@{closed}/x?connect_timeout=5",
                "SSOT_NATS_URL": f"nats://{closed}"}
    return env


def command_line(case: Case, places: dict[str, str]) -> list[str]:
    url = ["--url", f"http://{places['closed']}"] if case.where == "down" else []
    return [*url, *(a.format(**places) for a in case.args)]


def judged(case: Case, exit_code: int, stderr: str) -> str | None:
    """What is wrong with how ``case`` ended (None: it ended as the table says)."""
    lines = stderr.strip().splitlines()
    if exit_code == case.exit and len(lines) == 1 and lines[0].startswith(
            f"error: {case.code}: "):
        return None
    return (f"ssot {' '.join(case.args)} ({case.where}): expected {case.exit} error: "
            f"{case.code}, got {exit_code} {lines}")


@pytest.mark.parametrize("cases", [HTTP_COMMANDS, DATABASE_COMMANDS],
                         ids=["over the API", "on the database"])
def test_every_command_exits_by_the_table_with_one_line(
        places: dict[str, str], cases: list[Case]) -> None:
    unset = {"SSOT_DATABASE_URL": None, "SSOT_NATS_URL": None}
    wrong = []
    for c in cases:
        done = CliRunner().invoke(main, command_line(c, places), prog_name="ssot",
                                  env={**unset, **environment(c.where, places)})
        wrong.append(judged(c, done.exit_code, done.stderr))
    assert [w for w in wrong if w is not None] == []


#: The issue's cases, each a process: the same error exits alike whatever the command.
PROCESSES = [
    case("unset", UNAVAILABLE, "not_configured", "export", "--out", "{tmp}/x.ndjson.gz"),
    case("unset", UNAVAILABLE, "not_configured", "verify"),
    case("api", USAGE, "usage", "get", "{ns}/k", "--as-of", "2026-01-01T00:00"),
    case("api", USAGE, "position_beyond_head", "ls", "{ns}", "--position", "99999999999"),
    case("closed", UNAVAILABLE, "unreachable", "serve", "--port", "{port}"),
]


def test_as_processes_the_same_error_exits_alike(places: dict[str, str]) -> None:
    keep = {k: v for k, v in os.environ.items()
            if k not in ("SSOT_DATABASE_URL", "SSOT_NATS_URL", "SSOT_URL")}

    def run(c: Case) -> str | None:
        done = subprocess.run([SSOT, *command_line(c, places)], capture_output=True,
                              text=True, env={**keep, **environment(c.where, places)},
                              stdin=subprocess.DEVNULL, timeout=120)
        return judged(c, done.returncode, done.stderr)

    with ThreadPoolExecutor(3) as pool:
        assert [w for w in pool.map(run, PROCESSES) if w is not None] == []


def test_version_is_the_package_version() -> None:
    from importlib.metadata import version

    done = subprocess.run([SSOT, "--version"], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, f"ssot {version('nexus-ssot')}\n")
