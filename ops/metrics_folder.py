"""The metrics folder of ``ssot serve``: where each of its processes (HTTP workers, the
writer, the followers' threads in serve itself) keeps what it counts, so that one scrape of
``GET /metrics`` adds them up (prometheus-client's multiprocess mode, which reads the
folder from ``PROMETHEUS_MULTIPROC_DIR`` when it is first imported in a process)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from nexus_ssot.ledger.settings import Settings

VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def with_metrics_folder(settings: Settings) -> Settings:
    """``settings`` with the metrics folder of its data dir, named to this process and
    to every process it starts (the environment). Must run before prometheus-client is
    first imported here: it chooses its mode then, once."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before the metrics folder was "
                           "set: this process's counts would be missing from /metrics")
    folder = (settings.data_dir / "metrics").resolve()
    os.environ[VARIABLE] = str(folder)
    return settings.model_copy(update={"metrics_dir": folder})


def empty_metrics_folder(folder: Path) -> None:
    """Make ``folder`` empty and private (0700): the files of an earlier serve's processes
    would add their counts to this one's. Only the serve that claimed the data dir calls
    it."""
    if folder.is_symlink():
        raise RuntimeError(f"{folder} is a symbolic link; refusing to use it for metrics")
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(mode=0o700, parents=True)
    folder.chmod(0o700)
