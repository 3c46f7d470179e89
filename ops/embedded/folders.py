"""Folders of the embedded servers: made with a mode of ours, locked between processes,
and the shared ones under /var/tmp that only we can write."""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from .processes import EmbeddedError


def make_dirs(path: Path, mode: int = 0o755) -> None:
    """Create missing folders; only those we create get `mode` (umask-proof)."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=mode)
        except FileExistsError:
            continue
        os.chmod(folder, mode)


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def own_shared_dir(path: Path) -> Path:
    """A folder under /var/tmp that we own, readable by all, writable only by us."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o755)
        os.chmod(path, 0o755)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise EmbeddedError(
            f"{path} must be a folder owned by uid {os.geteuid()} and not writable by others; "
            "remove it and try again"
        )
    return path


def shared_dir_name(stem: str) -> Path:
    euid = os.geteuid()
    return Path("/var/tmp") / (stem if euid == 0 else f"{stem}-uid{euid}")
