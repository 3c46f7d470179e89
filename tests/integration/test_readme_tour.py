"""The README's five-minute tour, run for real: every ```console block's commands are
executed against a fresh server (its own process, its own database) and their output must
match the README, modulo timestamps and generated ids.

To refresh the README after an intended change of output:
    .venv/bin/python -m tests.integration.test_readme_tour --update
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.integration.conftest import free_port, start_serve

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent

_BLOCK = re.compile(r"```console\n(.*?)```", re.S)
_VOLATILE = [
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"), "<time>"),
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<uuid>"),
]


def normalize(text: str) -> str:
    for pattern, placeholder in _VOLATILE:
        text = pattern.sub(placeholder, text)
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def steps(readme: str) -> list[tuple[str, str]]:
    """(command, expected output) pairs of every console block, in order."""
    found: list[tuple[str, str]] = []
    for block in _BLOCK.findall(readme):
        command: list[str] | None = None
        output: list[str] = []
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            if line.startswith("$ "):
                if command is not None:
                    found.append(("\n".join(command), "\n".join(output)))
                command, output = [line[2:]], []
                while command[-1].endswith("\\") and i + 1 < len(lines):
                    i += 1
                    command.append(lines[i])
            else:
                output.append(line)
            i += 1
        if command is not None:
            found.append(("\n".join(command), "\n".join(output)))
    return found


@contextmanager
def tour_server(server_url: str) -> Iterator[str]:
    """`ssot serve` as its own process on a fresh database."""
    name = f"ssot_tour_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = psycopg.conninfo.conninfo_to_dict(server_url)
    parts["dbname"] = name
    port = free_port()
    env = {**os.environ, "SSOT_DATABASE_URL": psycopg.conninfo.make_conninfo(
        **{k: str(v) for k, v in parts.items()}), "SSOT_HTTP_PORT": str(port),
        # The tour does not look at NATS; never publish on a server the suite did not start.
        "SSOT_BROADCAST": "false"}
    proc: subprocess.Popen[bytes] | None = None
    try:
        proc, url = start_serve([], env, port, timeout=60)
        yield url
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


def run(command: str, url: str) -> str:
    port = url.rsplit(":", 1)[1]
    env = {**os.environ, "SSOT_URL": url, "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
           "COLUMNS": "200"}
    done = subprocess.run(["bash", "-c", command.replace("localhost:8080", f"127.0.0.1:{port}")],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=60, cwd=ROOT)
    return done.stdout


def test_the_readme_tour_runs_as_written(server_url: str) -> None:
    tour = steps(README.read_text())
    assert len(tour) >= 10, "the README must keep its tour"
    with tour_server(server_url) as url:
        for command, expected in tour:
            actual = run(command, url)
            assert normalize(actual) == normalize(expected), f"$ {command}"


def update_readme(server_url: str) -> None:
    text = README.read_text()
    with tour_server(server_url) as url:
        def fill(block: re.Match[str]) -> str:
            rendered = []
            for command, _ in steps(block.group(0)):
                rendered.append("$ " + command)
                output = run(command, url).rstrip("\n")
                if output:
                    rendered.append(output)
            return "```console\n" + "\n".join(rendered) + "\n```"

        README.write_text(_BLOCK.sub(fill, text))


if __name__ == "__main__":
    if "--update" in sys.argv:
        update_readme(os.environ.get("SSOT_DATABASE_URL",
                                     "postgresql://root@127.0.0.1:5432/postgres"))
    else:
        pytest.main([__file__])
