"""One `ssot serve` per data dir, and the other commands finding its servers, the way a user
meets them: `make run` (serve on the embedded default, the leader of its own process
group, in a folder whose `.ssot` is its data dir), then the operator commands as processes
of their own in that folder, with no SSOT_* URL in their environment."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.integration.conftest import free_port, start_serve

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SSOT = str(BIN / "ssot")
#: What a user's shell does not have: the servers' URLs, a data dir, the suite's token.
_NOT_THE_USERS = ("SSOT_DATABASE_URL", "SSOT_NATS_URL", "SSOT_DATA_DIR", "SSOT_URL",
                  "SSOT_TOKEN", "SSOT_BOOTSTRAP_TOKEN_SHA256")


def users_environment(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _NOT_THE_USERS}
    return {**env, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", **settings}


@dataclass
class MakeRun:
    """`ssot serve` started as `make run` starts it, in ``folder``."""

    folder: Path
    proc: subprocess.Popen[bytes]
    url: str

    @property
    def named(self) -> str:
        """How the other commands name it."""
        return f"ssot serve (pid {self.proc.pid}, {self.url})"

    def ssot(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SSOT, *args], cwd=self.folder, env=users_environment(),
                              capture_output=True, text=True, timeout=120)

    def api(self) -> httpx.Client:
        """A client of its API with the admin token it made in the data dir."""
        token = (self.folder / ".ssot/admin-token").read_text().strip()
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"},
                            timeout=30)

    def stop(self, sig: signal.Signals = signal.SIGINT) -> str:
        """Ctrl-C (or ``sig``) to its process group, as a terminal sends it; its output."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
        try:
            return self.proc.communicate(timeout=60)[0].decode()
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)


def make_run(folder: Path, **settings: str) -> MakeRun:
    port = free_port()
    proc, url = start_serve([], users_environment(SSOT_HTTP_PORT=str(port), **settings), port,
                            cwd=folder, new_session=True)
    return MakeRun(folder, proc, url)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MakeRun]:
    """One `make run` for the module, its digests signed and recorded after every event."""
    folder = tmp_path_factory.mktemp("checkout")
    key = folder / "signing.pem"
    key.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    running = make_run(folder, SSOT_HTTP_WORKERS="1", SSOT_SIGNING_KEY_FILE=str(key),
                       SSOT_DIGEST_EVERY_EVENTS="1", SSOT_DIGEST_EVERY_SECONDS="0.2")
    try:
        yield running
    finally:
        running.stop()


def wait_until(condition: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_the_operator_commands_use_the_servers_of_make_run(served: MakeRun) -> None:
    with served.api() as api:
        position = api.put("/v1/namespaces/ops/entries/k", json={"v": 1}).json()["position"]
        wait_until(lambda: (api.get("/v1/health").json()["broadcaster"] or {}).get(
            "position", 0) >= position, "the broadcaster to publish the write")
    says = f"using the database and NATS of {served.named}, recorded in .ssot/serve.json"
    for args in (["verify"], ["check"], ["reconcile"], ["replay", "status"],
                 ["export", "--out", "backup.ndjson.gz"]):
        done = served.ssot(*args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        assert says in done.stderr, (args, done.stderr)
    refused = served.ssot("import", "backup.ndjson.gz")  # found the database: not empty
    assert refused.returncode == 1 and says in refused.stderr, refused.stderr
    assert "not_configured" not in refused.stderr

    exports = served.ssot("env")
    assert exports.returncode == 0, exports.stderr
    env = dict(re.findall(r"^export (SSOT_\w+)=(.*)$", exports.stdout, re.M))
    assert sorted(env) == ["SSOT_DATABASE_URL", "SSOT_NATS_URL", "SSOT_URL"]
    assert shlex.split(env["SSOT_URL"]) == [served.url]
    assert "***" not in exports.stdout  # URLs that work: with their passwords
    assert served.ssot("env", "--unset").stdout == (
        "unset SSOT_DATABASE_URL SSOT_NATS_URL SSOT_URL\n")


def test_the_proof_example_of_the_docs_runs_as_written(served: MakeRun) -> None:
    """docs/integrity.md's proof checked with nothing but Python: the digest from the
    embedded NATS (`eval "$(ssot env)"`), the proof and key from the API."""
    text = (ROOT / "docs/integrity.md").read_text()
    section = text.split("### Checking a proof with nothing but Python", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "the proof example is gone from docs/integrity.md"
    script = block.group(1).replace("ops/verify_proof.py", str(ROOT / "ops/verify_proof.py"))
    entry = "/v1/namespaces/config/entries/services/payments/db"
    asked = re.search(r"(/v1/namespaces/[^/]+/entries/\S+)/proof", script)
    assert asked is not None and asked.group(1) == entry
    assert f"localhost:8080{entry} " in (ROOT / "README.md").read_text(), (
        "the example proves an entry the README's tour writes")
    with served.api() as api:
        api.put(entry, json={"pool": 10}).raise_for_status()
        api.put(entry, json={"pool": 20}, headers={"If-Match": '"1"'}).raise_for_status()
        # the example asks for the proof against the latest digest on NATS
        wait_until(lambda: api.get(entry + "/proof", params={"version": 2}).status_code == 200,
                   "a digest covering version 2")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=served.folder,
                          env=users_environment(), capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout.strip().splitlines()[-1:]) == (0, ["OK"]), (
        done.stdout + done.stderr)


def test_a_second_serve_on_the_data_dir_exits_naming_the_first_and_changes_nothing(
        served: MakeRun) -> None:
    data = served.folder / ".ssot"
    where = [data / "serve.json", data / "nats/nats.pid"]  # where the servers are
    before = [p.read_bytes() for p in where if p.exists()]
    second = subprocess.Popen([SSOT, "serve"], cwd=served.folder, start_new_session=True,
                              env=users_environment(SSOT_HTTP_PORT=str(free_port())),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = second.communicate(timeout=60)
    finally:
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)
    assert second.returncode == 4, out + err
    assert err.startswith("error: already_serving: the data dir .ssot is in use by "
                          f"{served.named}"), err
    assert [p.read_bytes() for p in where if p.exists()] == before
    with served.api() as api:
        assert api.put("/v1/namespaces/ops/entries/after", json={}).status_code == 201
    assert served.ssot("check").returncode == 0  # the same embedded servers, still up


def test_the_data_dir_and_its_secrets_are_its_owners_alone(served: MakeRun) -> None:
    data = served.folder / ".ssot"
    assert oct(data.stat().st_mode & 0o777) == oct(0o700)
    folders = [data, *(p for p in data.iterdir() if p.is_dir())]
    secrets = [data / name for name in (
        "admin-token", "serve.json", "serve.lock", "nats/ssot-service.password",
        "nats/nats.conf", "nats/authorization.conf", "postgres/ssot-superuser.password")]
    modes = {str(p.relative_to(data)): oct(p.stat().st_mode & 0o777) for p in folders + secrets}
    assert modes == {**{str(p.relative_to(data)): oct(0o700) for p in folders},
                     **{str(p.relative_to(data)): oct(0o600) for p in secrets}}


def test_a_crashed_serve_leaves_a_record_known_as_stale_that_the_next_replaces(
        tmp_path: Path) -> None:
    light = {"SSOT_HTTP_WORKERS": "1", "SSOT_BROADCAST": "false", "SSOT_PROJECTIONS": "false",
             "SSOT_DIGESTS": "false"}
    first = make_run(tmp_path, **light)
    first.stop(signal.SIGKILL)  # a crash: the embedded servers outlive it
    stale = first.ssot("check")
    assert (stale.returncode, stale.stderr.strip()) == (
        5, f"error: not_running: {first.named} recorded in .ssot/serve.json is not running"
        " (it stopped without removing its record: crashed or killed); start it again,"
        " or set SSOT_DATABASE_URL"), stale.stderr
    second = make_run(tmp_path, **light)
    try:
        found = second.ssot("env")
        assert found.returncode == 0 and second.named in found.stdout, found.stderr
    finally:
        output = second.stop()
    assert second.proc.returncode == 0, output
    assert f"names ssot serve pid {first.proc.pid}, which stopped without removing it" in output
    assert not (tmp_path / ".ssot/serve.json").exists()  # a clean stop removes it
    gone = second.ssot("env")
    assert gone.returncode == 5 and gone.stderr.startswith(
        "error: not_running: no ssot serve with embedded servers runs on the data dir .ssot"
    ), gone.stderr
