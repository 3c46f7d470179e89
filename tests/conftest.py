"""What every lane shares: the hypothesis profiles, and the order the files run in.

``make test`` runs the ``ci`` profile: derandomized, so a clean clone draws the same
examples every time and a red run is a bug, not bad luck. ``make fuzz`` selects ``fuzz``
(``SSOT_HYPOTHESIS_PROFILE=fuzz``): fresh random seeds and more examples per property."""

from __future__ import annotations

import contextlib
import importlib
import os
import pkgutil

import anyio
import hypothesis.internal.observability  # noqa: F401  (see below)
import pytest
import schemathesis.reporting.html.writer
import schemathesis.reporting.junitxml
from hypothesis import HealthCheck, settings

# Imported up front: hypothesis's and schemathesis's pytest plugins otherwise import (and
# assertion-rewrite) these at session end, and on CPython 3.11 that ast.parse can fail
# spuriously with "AST constructor recursion depth mismatch" once test threads have run
# (CPython gh-106905), failing a green run at its very end. The allure reporter is tried too,
# though its dependency is not installed: its assertion-rewritten code is cached then, and
# the plugin's own attempt at session end parses nothing.
with contextlib.suppress(ImportError):
    import schemathesis.reporting.allure  # noqa: F401
# anyio imports its modules lazily, on first use of a name: a server thread's first file
# response imported (and assertion-rewrote, anyio being a pytest plugin) anyio._core._fileio
# while another thread compiled, and failed with the same error (a /docs asset answered
# 500). Every module of anyio is imported here, before any thread runs.
for _module in pkgutil.walk_packages(anyio.__path__, "anyio."):
    with contextlib.suppress(ImportError):
        importlib.import_module(_module.name)

settings.register_profile(
    "ci", derandomize=True, database=None, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "fuzz", derandomize=False, database=None, deadline=None, print_blob=True,
    max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("SSOT_HYPOTHESIS_PROFILE", "ci"))

# The test files that take longest, longest first (seconds of one clean-clone run on this
# 2-core machine). `make test` hands whole files to its workers in collection order
# (`--dist loadfile`), so a long file collected last is a long tail while the other workers
# idle: starting the longest first (longest-processing-time scheduling) ends all workers
# together. A file not listed keeps its place after these; a stale entry is harmless.
LONGEST_FIRST = (
    "tests/integration/test_chaos.py",
    "tests/integration/test_cluster.py",
    "tests/integration/test_replay.py",
    "tests/integration/verify/test_events.py",
    "tests/integration/test_serve.py",
    "tests/integration/verify/test_runs.py",
    "tests/integration/test_bad_input.py",
    "tests/integration/test_instance.py",
    "tests/integration/test_backup.py",
    "tests/integration/test_hash_chain.py",
    "tests/integration/test_cli.py",
    "tests/integration/test_digests.py",
    "tests/integration/test_readme_tour.py",
    "tests/integration/test_schemas_page.py",
    "tests/integration/test_broadcaster.py",
    "tests/integration/test_batch_restore.py",
    "tests/integration/test_consistency.py",
    "tests/integration/test_embedded.py",
    "tests/integration/test_stored_bytes.py",
    "tests/integration/test_compatibility.py",
    "tests/integration/test_event_auth.py",
    "tests/integration/test_attacks.py",
    "tests/integration/verify/test_digests.py",
    "tests/integration/test_openapi_fuzz.py",
    "tests/integration/test_slow_clients.py",
    "tests/integration/test_namespace_existence.py",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--cluster", action="store_true",
                     help="Run the cluster's long fault runs (marker cluster; make test-cluster).")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--cluster"):
        # skipped, not deselected: a run of only these files still reports them (exit 0)
        skip = pytest.mark.skip(reason="the cluster's long runs: make test-cluster")
        for item in items:
            if item.get_closest_marker("cluster") is not None:
                item.add_marker(skip)
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}

    def order(item: pytest.Item) -> int:
        return rank.get(item.nodeid.split("::", 1)[0], len(rank))

    items.sort(key=order)  # stable: a file's tests keep their order
