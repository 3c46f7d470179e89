"""One ``ssot serve`` per data dir, and where its servers are for the other commands.

    <data_dir>/serve.lock   held (flock) by the data dir's ``ssot serve`` for its whole
                            life; names it (pid, HTTP URL) while held
    <data_dir>/serve.json   the record: its pid, HTTP URL, database and NATS URLs (with
                            their passwords: mode 0600) and start time; written once its
                            servers are up, removed when it stops cleanly

``ssot serve`` takes the lock before it starts an embedded server. The embedded servers take
a server still running on their folder for the leftover of a crashed run and stop it, so
without the lock a second serve on the same data dir stopped the first one's PostgreSQL;
with it the second exits naming the first and changes nothing. The kernel drops the lock
when the process ends, however it ends: a record whose lock nobody holds was left by a
serve that crashed or was killed. That tells a stale record exactly, whatever process has
since been given its pid; the next serve replaces it.

With both URLs configured, serve starts no embedded server: it takes no lock and writes no
record (several API servers may share one data dir then, for its admin token), and the
other commands take the URLs from the same configuration.

The commands that talk to PostgreSQL or NATS directly use the record when neither
``SSOT_DATABASE_URL`` nor ``SSOT_NATS_URL`` is set (``ops/database.py``); ``ssot env`` prints
it for a shell.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from nexus_ssot.ledger.errors import PreconditionFailed, Unavailable
from nexus_ssot.ledger.settings import Settings

from .embedded.folders import make_dirs
from .embedded.secret_files import write_owner_only

log = logging.getLogger("nexus_ssot.serve")

LOCK_NAME = "serve.lock"
RECORD_NAME = "serve.json"
#: The data dir and what serve makes in it are its owner's alone: the record and the
#: embedded servers' password files hold passwords, the admin token is one.
DATA_DIR_MODE = 0o700
#: How long serve retries a lock it did not get: a command testing a record holds the lock
#: (shared) for a moment, which must not pass for a running serve.
CLAIM_PATIENCE = 1.0


@dataclass(frozen=True)
class Running:
    """A running ``ssot serve``, as its record says."""

    pid: int
    url: str
    database_url: str
    nats_url: str
    started_at: str
    record: Path

    def describe(self) -> str:
        return f"ssot serve (pid {self.pid}, {self.url})"

    def as_dict(self) -> dict[str, object]:
        return {"pid": self.pid, "url": self.url, "database_url": self.database_url,
                "nats_url": self.nats_url, "started_at": self.started_at,
                "record": str(self.record)}


def make_data_dir(data_dir: Path) -> None:
    """Make the data dir, owner-only, when it is missing (one that exists is left as is:
    an embedded cluster inside may need its mode)."""
    make_dirs(data_dir, DATA_DIR_MODE)


def http_url(settings: Settings) -> str:
    """Where a client on this machine reaches the API that ``settings`` serve."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(
        settings.http_host, settings.http_host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{'https' if settings.tls_cert else 'http'}://{host}:{settings.http_port}"


class Claim:
    """A serve's hold on its data dir (see ``claimed``)."""

    def __init__(self, data_dir: Path, *, held: bool) -> None:
        self.data_dir = data_dir
        self.held = held

    @contextlib.contextmanager
    def recorded(self, ready: Settings) -> Iterator[None]:
        """Record where the servers of ``ready`` (its URLs resolved) are until the block
        ends: written whole and owner-only, removed after. Nothing when not held."""
        if not self.held:
            yield
            return
        record = {"pid": os.getpid(), "url": http_url(ready), "database_url": ready.database_url,
                  "nats_url": ready.nats_url, "started_at": datetime.now(UTC).isoformat()}
        path = self.data_dir / RECORD_NAME
        write_owner_only(path, json.dumps(record, indent=2).encode() + b"\n")
        try:
            yield
        finally:
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def claimed(settings: Settings, *, patience: float = CLAIM_PATIENCE) -> Iterator[Claim]:
    """Hold the data dir of ``settings`` while the block runs, when serve embeds a server
    there. Raises PreconditionFailed (``already_serving``) naming the serve that holds it
    (after ``patience`` seconds of retries); then nothing was changed."""
    data_dir = settings.data_dir
    if settings.database_url and settings.nats_url:
        yield Claim(data_dir, held=False)
        return
    make_data_dir(data_dir)
    fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        if not _lock(fd, fcntl.LOCK_EX, patience=patience):
            raise PreconditionFailed(
                f"the data dir {data_dir} is in use by {_holder(data_dir)}: a second serve "
                "would stop its embedded servers. Stop that one first, or give this one "
                "another SSOT_DATA_DIR", code="already_serving", field="SSOT_DATA_DIR")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "url": http_url(settings)}).encode(), 0)
        _replace_stale(data_dir)
        try:
            yield Claim(data_dir, held=True)
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # drops the lock


def find(data_dir: Path) -> Running | None:
    """The serve running on ``data_dir`` as its record says; None when there is no record.
    Raises Unavailable: ``not_running`` when the record is stale (or not a record),
    ``unreadable`` when this user may not read it."""
    path = data_dir / RECORD_NAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise Unavailable(f"cannot read {path}: {e.strerror} (the data dir and the record are "
                          "their owner's alone)", code="unreadable") from None
    try:
        record = json.loads(text)
        running = Running(int(record["pid"]), str(record["url"]), str(record["database_url"]),
                          str(record["nats_url"]), str(record["started_at"]), path)
    except (ValueError, KeyError, TypeError):
        raise Unavailable(f"{path} is not a record of ssot serve; remove it",
                          code="not_running") from None
    if not _held(data_dir):
        raise Unavailable(
            f"{running.describe()} recorded in {path} is not running (it stopped without "
            "removing its record: crashed or killed); start it again, or set "
            "SSOT_DATABASE_URL", code="not_running")
    return running


def _lock(fd: int, how: int, *, patience: float = 0.0) -> bool:
    deadline = time.monotonic() + patience
    while True:
        try:
            fcntl.flock(fd, how | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def _held(data_dir: Path) -> bool:
    """Whether a serve holds the lock of ``data_dir`` (testing it takes it, shared, for a
    moment)."""
    try:
        fd = os.open(data_dir / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False
    try:
        return not _lock(fd, fcntl.LOCK_SH)
    finally:
        os.close(fd)


def _holder(data_dir: Path) -> str:
    """The serve holding ``data_dir``, as named in its lock file (or its record)."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        named = json.loads((data_dir / LOCK_NAME).read_text())
        return f"ssot serve (pid {int(named['pid'])}, {named['url']})"
    return "another ssot serve (starting: its pid is not written yet)"


def _replace_stale(data_dir: Path) -> None:
    """Remove a record left by a serve that did not stop cleanly (we hold the lock: its
    writer is gone)."""
    path = data_dir / RECORD_NAME
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        pid = json.loads(path.read_text())["pid"]
        log.warning("%s names ssot serve pid %s, which stopped without removing it (crashed "
                    "or killed): replacing it; servers it left running are stopped", path, pid)
    path.unlink(missing_ok=True)
