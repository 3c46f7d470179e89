"""What each process of ``ssot serve`` loads when a feature is off: PyJWT and
cryptography come with OIDC or a signing key, jsonschema-rs with the first schema
(each ~5-10 MB of memory in every process that holds it; docs/performance.md); and
nats-py only where the followers run."""

from __future__ import annotations

import subprocess
import sys

import pytest

#: Loaded on demand only.
ON_DEMAND = ("jwt", "cryptography", "jsonschema_rs")

#: What an HTTP worker, the writer and the supervisor (the followers) import.
PROCESSES = {
    "http worker": "import nexus_ssot.api.app as a; "
                   "from nexus_ssot.ledger.settings import Settings; "
                   "a.create_app(Settings(database_url='postgresql://127.0.0.1:1/none'))",
    "writer": "import nexus_ssot.ops.writer_process",
    "supervisor": "import nexus_ssot.ops.serve, nexus_ssot.ops.followers",
}


@pytest.mark.parametrize("process", sorted(PROCESSES))
def test_a_process_does_not_load_what_its_features_do_not_need(process: str) -> None:
    code = (f"{PROCESSES[process]}\nimport sys\n"
            f"print(' '.join(m for m in {ON_DEMAND!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"the {process} loaded {done.stdout.strip()}"


@pytest.mark.parametrize("process", ["http worker", "writer"])
def test_only_the_followers_load_nats(process: str) -> None:
    """nats-py (~35 ms to import, ~1.4 MB) is the followers' (the broadcaster, the
    digester, the KV mirror): the processes that serve and write never publish."""
    code = f"{PROCESSES[process]}\nimport sys\nprint('nats' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False", f"the {process} loaded nats-py"
    followers = subprocess.run([sys.executable, "-c", f"{PROCESSES['supervisor']}\n"
                                "import sys\nprint('nats' in sys.modules)"],
                               capture_output=True, text=True, timeout=60, check=False)
    assert followers.stdout.strip() == "True", followers.stderr  # the check sees it


def test_the_check_sees_a_loaded_library() -> None:
    """The same check, with a feature that needs one of them: it is seen."""
    code = ("from nexus_ssot.ledger.schemas.compiler import check_schema\n"
            "check_schema({'type': 'object'})\nimport sys\n"
            f"print(' '.join(m for m in {ON_DEMAND!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.stdout.split() == ["jsonschema_rs"], done.stderr
