"""Where an embedded PostgreSQL cluster lives (its data dir, or a folder under /var/tmp
named by a marker in the data dir when the user running PostgreSQL cannot reach that),
its postmaster, and the removal of clusters whose data dir has gone (or, at the end of a
test run, lies under the run's temporary folder)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
from pathlib import Path

from .folders import locked, make_dirs, own_shared_dir
from .processes import alive, command_line, end_process, read_pid, wait_gone

MARKER = ".ssot-pgdata.json"  # in a data dir whose cluster lives elsewhere


def postmaster_in(pgdata: Path) -> int | None:
    """The pid of a live postmaster serving `pgdata`, from its postmaster.pid."""
    pid = read_pid(pgdata / "postmaster.pid")
    if pid is None or not alive(pid):
        return None
    try:  # the postmaster's working folder is its data dir
        return pid if os.readlink(f"/proc/{pid}/cwd") == os.path.realpath(pgdata) else None
    except OSError:
        argv = command_line(pid)
        return pid if argv and "postgres" in argv[0] and str(pgdata) in argv else None


def stop_postmaster(pid: int, fast_grace: float) -> None:
    """Fast shutdown (SIGINT, as `pg_ctl stop -m fast`), then immediate (SIGQUIT), then KILL."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
    if not wait_gone(pid, fast_grace):
        end_process(pid, signal.SIGQUIT, 5.0)


def discard_cluster(pgdata: Path) -> None:
    """Stop a postmaster still serving ``pgdata`` and delete the cluster."""
    pid = postmaster_in(pgdata)
    if pid is not None:
        end_process(pid, signal.SIGQUIT, 5.0)
    shutil.rmtree(pgdata, ignore_errors=True)


def _read_json(path: Path) -> dict[str, str]:
    """The JSON object in `path`; {} when unreadable. FileNotFoundError passes through."""
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _is_token(text: str) -> bool:
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


def marker_token(data_dir: Path) -> str | None:
    """The token naming the relocated cluster of ``data_dir``, if it has a marker."""
    try:
        token = _read_json(data_dir / MARKER).get("token", "")
    except FileNotFoundError:
        return None
    return token if _is_token(token) else None


def relocated_pgdata(data_dir: Path, root: Path) -> Path:
    """The cluster folder of `data_dir` under `root`, named by a token kept in both places."""
    base = own_shared_dir(root)
    with locked(base):
        token = marker_token(data_dir)
        owner = base / f"{token}.json"
        if token is None or not owner.exists():
            token = secrets.token_hex(16)
            owner = base / f"{token}.json"
            make_dirs(data_dir.parent)
            with contextlib.suppress(FileExistsError):
                data_dir.mkdir(mode=0o700)
            # owner file first: a crash in between leaves an orphan that is collected below
            owner.write_text(json.dumps({"data_dir": str(data_dir)}) + "\n")
            (data_dir / MARKER).write_text(
                json.dumps({"pgdata": str(base / token), "token": token}) + "\n"
            )
        elif _read_json(owner).get("data_dir") != str(data_dir):  # the data dir was moved
            owner.write_text(json.dumps({"data_dir": str(data_dir)}) + "\n")
        _collect_orphans(base)
    log_link = data_dir / "postgres.log"
    if not log_link.is_symlink():
        with contextlib.suppress(OSError):
            log_link.symlink_to(base / token / "postgres.log")
    return base / token


def _collect_orphans(base: Path) -> None:
    """Remove relocated clusters whose data dir is gone or no longer names them."""
    for token in sorted({entry.name.removesuffix(".json") for entry in base.iterdir()}):
        if not _is_token(token):
            continue
        owner = base / f"{token}.json"
        try:
            data_dir = Path(_read_json(owner).get("data_dir", ""))
            if data_dir.is_absolute() and marker_token(data_dir) == token:
                continue
        except FileNotFoundError:
            pass
        except OSError:
            continue  # unreadable: keep it
        discard_cluster(base / token)
        owner.unlink(missing_ok=True)


def discard_relocated_under(folder: Path, root: Path) -> list[Path]:
    """Stop and delete every cluster relocated under ``root`` for a data dir below
    ``folder`` (a test run's temporary folder, which outlives the run: such clusters would
    otherwise stay until the folder is gone and a later start collects them); returns the
    clusters removed. Clusters of any other data dir are left alone."""
    if not root.is_dir():
        return []
    folder = folder.resolve()
    removed = []
    with locked(root):
        for owner in sorted(root.glob("*.json")):
            token = owner.name.removesuffix(".json")
            if not _is_token(token):
                continue
            try:
                data_dir = Path(_read_json(owner).get("data_dir", ""))
            except OSError:
                continue
            if not data_dir.is_absolute() or not data_dir.resolve().is_relative_to(folder):
                continue
            discard_cluster(root / token)
            owner.unlink(missing_ok=True)
            (data_dir / MARKER).unlink(missing_ok=True)
            removed.append(root / token)
    return removed
