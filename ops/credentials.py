"""The administrator's token kept in the data dir, the way a kubeconfig is kept: ``ssot
serve`` makes it on first start (mode 0600) unless the deployment hands in a bootstrap
token's hash (``SSOT_BOOTSTRAP_TOKEN_SHA256``), and the ``ssot`` commands use it when no
``--token`` / ``SSOT_TOKEN`` is given."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from nexus_ssot.access.tokens import new_token, token_id_of

ADMIN_TOKEN_FILE = "admin-token"


def admin_token_path(data_dir: Path) -> Path:
    return data_dir / ADMIN_TOKEN_FILE


def read_admin_token(data_dir: Path) -> str | None:
    """The token in ``<data_dir>/admin-token``, when there is one this user may read."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        token = admin_token_path(data_dir).read_text().strip()
        if token_id_of(token) is not None:
            return token
    return None


def ensure_admin_token(data_dir: Path) -> tuple[str, bool]:
    """The administrator's token of ``data_dir`` and whether it was made now. Made with
    mode 0600 from the start (never written world-readable, then tightened)."""
    existing = read_admin_token(data_dir)
    if existing is not None:
        return existing, False
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # ssot serve made it already
    _, token = new_token()
    path = admin_token_path(data_dir)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # an unreadable or malformed leftover
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, True


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
