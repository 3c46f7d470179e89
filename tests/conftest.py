"""What every lane shares: the hypothesis profiles, and the order the files run in.

``make test`` runs the ``ci`` profile: derandomized, so a clean clone draws the same
examples every time and a red run is a bug, not bad luck. ``make fuzz`` selects ``fuzz``
(``SSOT_HYPOTHESIS_PROFILE=fuzz``): fresh random seeds and more examples per property."""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import pkgutil
import ssl
import warnings
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from nexus_ssot.ops.embedded.folders import shared_dir_name
from nexus_ssot.ops.embedded.pg_cluster import discard_relocated_under


# Imported up front, every module of the pytest plugins whose whole distributions pytest
# assertion-rewrites (hypothesis, schemathesis, anyio): otherwise a module first imported
# while test threads run (anyio imports lazily; hypothesis and schemathesis import parts at
# first use and at session end) is parsed with ast.parse beside another thread's compile,
# and on CPython 3.11 that fails spuriously with "AST constructor recursion depth
# mismatch" (CPython gh-106905): seen as a /docs asset answering 500, a property test
# failing at its first example, a green run failing at its very end. Optional parts whose
# dependencies are not installed are left out, and hypothesis.extra (it hooks into other
# libraries when imported). Of schemathesis only what its plugin imports at session end:
# the rest is imported while collecting, and all of it, rewritten, costs every worker
# ~1.6 s of CPU.
def _import_all(package: str, leave_out: tuple[str, ...] = ()) -> None:
    root = importlib.import_module(package)
    for module in pkgutil.walk_packages(root.__path__, package + "."):
        if not module.name.startswith(leave_out):
            with contextlib.suppress(ImportError):
                importlib.import_module(module.name)


with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # deprecated modules say so when imported
    _import_all("anyio")
    _import_all("hypothesis", ("hypothesis.extra",))
    _import_all("schemathesis.reporting")  # what its plugin imports at session end

# Every HTTP client the suite makes (httpx, in its processes and in the commands it runs)
# reads the machine's CA store from OpenSSL's hashed directory, looking a certificate up
# when one is needed, not the whole bundle that SSL_CERT_FILE names, parsed again for each
# client: 33 ms of CPU per client on this host against 0.6 ms, and the suite makes
# thousands (a test's client fixture, each `ssot` command). Its servers are on loopback,
# over plain HTTP but for tests/integration/test_tls.py, which brings its own CA.
_CA_DIR = os.environ.get("SSL_CERT_DIR") or ssl.get_default_verify_paths().capath
if _CA_DIR and os.path.isdir(_CA_DIR):
    os.environ.pop("SSL_CERT_FILE", None)
    os.environ["SSL_CERT_DIR"] = _CA_DIR

settings.register_profile(
    "ci", derandomize=True, database=None, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "fuzz", derandomize=False, database=None, deadline=None, print_blob=True,
    max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("SSOT_HYPOTHESIS_PROFILE", "ci"))

# The test files that take longest, longest first (each file's seconds in one run of
# `make test` on this 2-core machine, `--durations=0` summed by file, 2026-12-06; the files
# of 5 s and more). `make test` hands whole files to its workers in collection order
# (`--dist loadfile`), so a long file collected last is a long tail while the other workers
# idle: starting the longest first (longest-processing-time scheduling) ends all workers
# together. A file not listed keeps its place after these; a stale entry is harmless.
LONGEST_FIRST = (
    "tests/integration/test_chaos.py",
    "tests/integration/test_openapi_fuzz.py",
    "tests/integration/test_replay.py",
    "tests/integration/verify/test_events.py",
    "tests/integration/test_backup.py",
    "tests/integration/verify/test_runs.py",
    "tests/integration/test_cli.py",
    "tests/integration/test_serve.py",
    "tests/integration/test_monitoring.py",
    "tests/integration/test_instance.py",
    "tests/integration/test_embedded.py",
    "tests/integration/test_broadcaster.py",
    "tests/integration/test_consistency.py",
    "tests/integration/test_digests.py",
    "tests/integration/test_readme_tour.py",
    "tests/integration/test_http_workers.py",
    "tests/integration/test_serve_followers.py",
    "tests/integration/test_cluster.py",
    "tests/integration/test_roles.py",
    "tests/integration/test_bad_input.py",
    "tests/integration/test_stored_bytes.py",
    "tests/integration/test_batch_restore.py",
    "tests/integration/test_lean_processes.py",
    "tests/integration/test_attacks.py",
    "tests/integration/test_compatibility.py",
    "tests/integration/test_reconcile.py",
    "tests/integration/verify/test_digests.py",
    "tests/integration/test_event_auth.py",
    "tests/integration/test_access_log.py",
    "tests/integration/test_namespace_existence.py",
    "tests/integration/test_slow_clients.py",
    "tests/integration/test_wheel.py",
    "tests/integration/test_console.py",
    "tests/integration/test_log_tail.py",
    "tests/integration/test_nats_authorization.py",
    "tests/unit/test_metrics_exposition.py",
    "tests/integration/test_hash_chain.py",
    "tests/integration/test_writer_process.py",
    "tests/integration/test_api_page.py",
    "tests/unit/test_architecture.py",
    "tests/integration/test_metrics.py",
    "tests/integration/test_tracing.py",
    "tests/integration/test_idempotency_retention.py",
    "tests/integration/test_status.py",
    "tests/integration/test_deploy.py",
    "tests/integration/test_access.py",
    "tests/integration/test_schemas_page.py",
    "tests/integration/test_tls.py",
    "tests/integration/test_projections.py",
    "tests/integration/test_exit_codes.py",
    "tests/unit/test_policy.py",
    "tests/integration/test_deploy_manifests.py",
    "tests/integration/test_schemas.py",
    "tests/integration/test_audit.py",
    "tests/integration/test_unchanged_writes.py",
    "tests/integration/test_import_contracts.py",
    "tests/integration/test_time_travel.py",
    "tests/integration/test_console_auth_off.py",
    "tests/integration/test_conflicts.py",
    "tests/integration/test_kv_mirror.py",
)


@pytest.fixture(scope="session", autouse=True)
def _relocated_clusters_removed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """At the end of the session (of each worker), the embedded PostgreSQL clusters that
    tests' ``ssot serve`` runs relocated under /var/tmp for data dirs in this session's
    temporary folder: pytest keeps that folder for a while, so nothing else would remove
    them (~47 MB each)."""
    yield
    removed = discard_relocated_under(tmp_path_factory.getbasetemp(),
                                      shared_dir_name("nexus-ssot-pg-data"))
    if removed:
        print(f"\nremoved {len(removed)} relocated PostgreSQL cluster(s) of this session")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--cluster", action="store_true",
                     help="Run the cluster's long fault runs (marker cluster; make test-cluster).")
    parser.addoption("--console-screenshots", metavar="DIR", default=None,
                     help="Save screenshots of the web console's main views into DIR "
                          "(tests/integration/test_console.py; make screenshots).")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--cluster"):
        # skipped, not deselected: a run of only these files still reports them (exit 0)
        skip = pytest.mark.skip(reason="the cluster's long runs: make test-cluster")
        for item in items:
            if item.get_closest_marker("cluster") is not None:
                item.add_marker(skip)
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}

    # The unit lane first, on workers that have run nothing yet, then the longest files.
    # On CPython 3.11 an ast.parse or compile beside another thread's fails spuriously
    # (gh-106905, see above), and the unit lane parses and compiles the most at run time
    # (hypothesis reads the source of a filter's lambda); a worker that ran integration
    # files may still have a server's thread doing the same. The lane is short (~15 s of
    # CPU in all), so the longest files still start within seconds.
    def order(item: pytest.Item) -> tuple[bool, int]:
        path = item.nodeid.split("::", 1)[0]
        return not path.startswith("tests/unit/"), rank.get(path, len(rank))

    items.sort(key=order)  # stable: a file's tests keep their order


def pytest_collection_finish(session: pytest.Session) -> None:
    """What collection built (every module the suite imports, the collected tests) lives
    until the session ends: frozen, no collection of the oldest generation walks it again
    while the tests run, as ``ssot serve``'s processes freeze their start-up heap
    (ops/heap.py). The unit lane alone spent 2.0 s of its CPU in the garbage collector,
    1.0 s with this (gc.callbacks, one worker)."""
    gc.collect()
    gc.freeze()
