"""The asynchronous views the ledger ships, by name."""

from __future__ import annotations

from collections.abc import Callable

from .namespace_stats import NamespaceStats
from .runtime import View

#: Every asynchronous view: name → constructor (taking no arguments, or the settings a
#: view with side effects needs; see ``ops/project.py``).
SQL_VIEWS: dict[str, Callable[[], View]] = {
    NamespaceStats.name: NamespaceStats,
}
