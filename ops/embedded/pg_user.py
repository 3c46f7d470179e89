"""Who runs PostgreSQL (initdb and postgres refuse root: as root, the system user
``ssot-pg``, created on first use), what that user may reach, and running PostgreSQL's
tools as that user."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .processes import EmbeddedError

PG_OS_USER = "ssot-pg"


@dataclass(frozen=True)
class RunAs:
    """The OS user that runs PostgreSQL."""

    name: str
    uid: int
    gid: int
    gids: frozenset[int]
    switch: bool  # True when we are root and run PostgreSQL as another user


def run_as() -> RunAs:
    """Ourselves, or (when we are root) the system user PG_OS_USER."""
    euid = os.geteuid()
    if euid != 0:
        try:
            name = pwd.getpwuid(euid).pw_name
        except KeyError:
            name = str(euid)
        gids = frozenset({os.getegid(), *os.getgroups()})
        return RunAs(name, euid, os.getegid(), gids, switch=False)
    entry = _system_user(PG_OS_USER)
    return RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid, frozenset({entry.pw_gid}), True)


def _system_user(name: str) -> pwd.struct_passwd:
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(name)
    # Serialised across processes: test workers starting at once on a fresh machine each
    # ran useradd, and a user created by one was rewritten by the next (initdb then ran
    # as a uid /etc/passwd no longer named).
    with open(Path(tempfile.gettempdir()) / f".{name}-useradd.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
        return _create_system_user(name)


def _create_system_user(name: str) -> pwd.struct_passwd:
    command = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        said = done.stderr.strip()
    except OSError as error:
        said = str(error)
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise EmbeddedError(
            f"could not create the OS user {name!r} that runs PostgreSQL "
            f"(initdb and postgres refuse root): {said}"
        ) from None


def permits(st: os.stat_result, who: RunAs, want: int) -> bool:
    """Whether mode bits grant `who` the access `want` (4 read, 2 write, 1 search/execute)."""
    if who.uid == 0:
        return True
    if st.st_uid == who.uid:
        granted = st.st_mode >> 6
    elif st.st_gid in who.gids:
        granted = st.st_mode >> 3
    else:
        granted = st.st_mode
    return granted & want == want


def traversable(path: Path, who: RunAs) -> bool:
    """Whether `who` can search `path` and every folder above it."""
    try:
        return all(permits(os.stat(p), who, 1) for p in (path, *path.parents))
    except OSError:
        return False


def _child_env() -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PG", "LC_")) and key not in ("LANG", "LANGUAGE")
    }
    env["LC_ALL"] = "C.UTF-8"
    return env


def run_tool(command: list[str], who: RunAs, timeout: float) -> tuple[int, str]:
    """Run a PostgreSQL tool as `who`; output goes to a file, as pg_ctl may hang on a pipe."""
    with tempfile.TemporaryFile() as output:
        try:
            done = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=_child_env(),
                cwd="/",
                timeout=timeout,
                check=False,
                user=who.uid if who.switch else None,
                group=who.gid if who.switch else None,
                extra_groups=[] if who.switch else None,
            )
            code = done.returncode
        except subprocess.TimeoutExpired:
            code = -1
        except OSError as error:
            return 127, f"{command[0]}: {error}"
        output.seek(0)
        text = output.read().decode(errors="replace")
    if code == -1:
        text += f"\n(timed out after {timeout:.0f} s)"
    return code, text


def give(path: Path, who: RunAs) -> None:
    """Make `path` and everything in it belong to `who`, when it does not already."""
    if not who.switch or path.stat().st_uid == who.uid:
        return
    os.chown(path, who.uid, who.gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), who.uid, who.gid)
