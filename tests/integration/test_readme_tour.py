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
import tempfile
from collections.abc import Callable, Iterator
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
    (re.compile(r"ssot_[0-9a-f]{16}_[A-Za-z0-9_-]{43}"), "<token>"),
    (re.compile(r"bootstrap-[0-9a-f]{12}"), "bootstrap-<id>"),
    (re.compile(r"\b(token:?\s*|\"id\":\")[0-9a-f]{16}\b"), r"\1<token-id>"),
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
                # a command goes on after a trailing backslash or inside a quoted string
                while (command[-1].endswith("\\") or "\n".join(command).count("'") % 2
                       ) and i + 1 < len(lines):
                    i += 1
                    command.append(lines[i])
            else:
                output.append(line)
            i += 1
        if command is not None:
            found.append(("\n".join(command), "\n".join(output)))
    return found


#: Not the suite's administrator: the tour's server makes its own admin token in its data
#: dir on first start, as `make run` does, and the tour's commands find it there.
_SUITE_AUTH = ("SSOT_BOOTSTRAP_TOKEN_SHA256", "SSOT_TOKEN")


def tour_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _SUITE_AUTH}


@contextmanager
def tour_server(server_url: str, data_dir: Path) -> Iterator[str]:
    """`ssot serve` as its own process on a fresh database, its data dir ``data_dir``."""
    name = f"ssot_tour_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = psycopg.conninfo.conninfo_to_dict(server_url)
    parts["dbname"] = name
    port = free_port()
    env = {**tour_environment(), "SSOT_DATABASE_URL": psycopg.conninfo.make_conninfo(
        **{k: str(v) for k, v in parts.items()}), "SSOT_HTTP_PORT": str(port),
        "SSOT_DATA_DIR": str(data_dir),
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


def run(command: str, url: str, data_dir: Path) -> str:
    """``command`` as the README's reader runs it: the CLI on the PATH, the admin token the
    server made in ``TOKEN`` (``export TOKEN=$(cat .ssot/admin-token)``), in the test's own
    folder (a file a page writes lands there, not in the checkout)."""
    port = url.rsplit(":", 1)[1]
    env = {**tour_environment(), "SSOT_URL": url, "SSOT_DATA_DIR": str(data_dir),
           "TOKEN": (data_dir / "admin-token").read_text().strip(),
           "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "COLUMNS": "200"}
    command = command.replace(".ssot/", f"{data_dir}/")
    done = subprocess.run(["bash", "-c", command.replace("localhost:8080", f"127.0.0.1:{port}")],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=60, cwd=data_dir)
    return done.stdout


def run_page(page: Path, server_url: str, data_dir: Path,
             normal: Callable[[str], str] = normalize) -> None:
    """Run every command of ``page``'s console blocks on a fresh server; each output must
    be the page's (as ``normal`` sees them)."""
    with tour_server(server_url, data_dir) as url:
        for command, expected in steps(page.read_text()):
            actual = run(command, url, data_dir)
            assert normal(actual) == normal(expected), f"$ {command}"


def update_page(page: Path, server_url: str, data_dir: Path) -> None:
    """Write into ``page`` the output its commands give now."""
    text = page.read_text()
    with tour_server(server_url, data_dir) as url:
        def fill(block: re.Match[str]) -> str:
            rendered = []
            for command, _ in steps(block.group(0)):
                rendered.append("$ " + command)
                output = run(command, url, data_dir).rstrip("\n")
                if output:
                    rendered.append(output)
            return "```console\n" + "\n".join(rendered) + "\n```"

        page.write_text(_BLOCK.sub(fill, text))


def test_the_readme_tour_runs_as_written(server_url: str, tmp_path: Path) -> None:
    assert len(steps(README.read_text())) >= 10, "the README must keep its tour"
    run_page(README, server_url, tmp_path)
    assert (tmp_path / "admin-token").stat().st_mode & 0o777 == 0o600


def page_main(page: Path, test_file: str) -> None:
    """A page test's command line: ``--update`` writes into ``page`` the output its
    commands give now (on the server of SSOT_DATABASE_URL); otherwise run the test."""
    if "--update" in sys.argv:
        with tempfile.TemporaryDirectory() as folder:
            update_page(page, os.environ.get("SSOT_DATABASE_URL",
                                             "postgresql://root@127.0.0.1:5432/postgres"),
                        Path(folder))
    else:
        pytest.main([test_file])


if __name__ == "__main__":
    page_main(README, __file__)
