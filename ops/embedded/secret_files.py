"""Secrets of the embedded servers, kept in files only their owner may read or write.

A secret file is made owner-only from its first byte: written to a fresh temporary file
created with mode 0600 (``os.open``; never a chmod afterwards, which would leave a moment
when others could read it), then renamed over the old one, so a reader sees the old
secret or the new one, never a part. The secret itself never reaches a log or an error.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from .processes import EmbeddedError

SECRET_MODE = 0o600


def new_password() -> str:
    """32 random bytes, URL-safe (no character needs quoting in a URL or a config file)."""
    return secrets.token_urlsafe(32)


def write_secret(path: Path, secret: str, owner: tuple[int, int] | None = None) -> None:
    """Put ``secret`` in ``path`` (mode 0600; owned by ``owner``'s uid and gid when given,
    else by us)."""
    write_owner_only(path, (secret + "\n").encode(), owner)


def write_owner_only(path: Path, data: bytes, owner: tuple[int, int] | None = None) -> None:
    """Replace ``path`` whole with ``data``, mode 0600 from creation (never readable by
    others, not even half-written), owned by ``owner`` when given."""
    scratch = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, SECRET_MODE)
    try:
        try:
            if owner is not None:
                os.fchown(fd, *owner)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(scratch, path)
    except BaseException:
        with contextlib.suppress(OSError):
            scratch.unlink()
        raise


def read_secret(path: Path) -> str | None:
    """The secret kept in ``path``; None when there is no such file. Refuses a file others
    may read or write (it was exposed: make a new one)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise EmbeddedError(f"cannot read the secret file {path}: {error.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise EmbeddedError(f"the secret file {path} is not a regular file")
        if st.st_mode & 0o077:
            raise EmbeddedError(
                f"the secret file {path} has mode {stat.S_IMODE(st.st_mode):04o}: others may "
                "have read it; change the password it holds and make the file 0600"
            )
        secret = os.read(fd, 4096).decode().strip()
    finally:
        os.close(fd)
    if not secret:
        raise EmbeddedError(f"the secret file {path} is empty")
    return secret


def ensure_secret(path: Path) -> str:
    """The secret in ``path``, made (a new password) when the file is missing."""
    secret = read_secret(path)
    if secret is None:
        secret = new_password()
        write_secret(path, secret)
    return secret
