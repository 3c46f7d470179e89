"""The image, checked where no Docker engine runs: the image ops/deploy/Dockerfile builds
(hadolint clean) comes from a base pinned by tag and digest, runs as an unprivileged user,
carries no secret and checks its health on /v1/health; the backup CronJob names that image
by the tag its build command gives, runs a script the image holds, and is a valid
Kubernetes object (kubernetes-validate, offline). Its entrypoint, run on this host with the
image's environment, migrates the schema once as its owner (two started together apply
each migration once), grants the service role its rights, then serves as that role.
(The other manifests: test_deploy_manifests.py.)"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import psycopg
import pytest
import yaml

from nexus_ssot.ledger.migrate import available
from tests.integration.conftest import AUTH, delete_stream, free_port, wait_until
from tests.integration.db_roles import LedgerRoles, ledger_roles

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "ops" / "deploy" / "Dockerfile"
CRONJOB = ROOT / "ops" / "deploy" / "k8s" / "backup-cronjob.yaml"
BIN = Path(sys.executable).parent
ENTRYPOINT = ROOT / "ops" / "deploy" / "entrypoint.sh"
ENTRYPOINT_IN_IMAGE = "/app/ops/deploy/entrypoint.sh"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, its arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1])
            for line in lines if line and not line.startswith("#")]


def final_stage() -> list[tuple[str, str]]:
    found = instructions()
    last = max(i for i, (op, _) in enumerate(found) if op == "FROM")
    return found[last + 1:]


def test_the_dockerfile_passes_hadolint() -> None:
    done = subprocess.run([str(BIN / "hadolint"), "--failure-threshold", "info",
                           str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_is_pinned_built_apart_unprivileged_and_keeps_no_secret() -> None:
    found = instructions()
    args = dict(a.split("=", 1) for op, a in found if op == "ARG" and "=" in a)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", args["PYTHON"])
    stages = [a for op, a in found if op == "FROM"]
    assert len(stages) == 2 and all(s.startswith("${PYTHON}") for s in stages)
    final = final_stage()
    assert not any(re.search(r"apt-get|gcc|build-essential|pip ", a) for _, a in final), (
        "the image that runs compiles and downloads nothing")
    user = [a for op, a in final if op == "USER"][-1]
    assert user.split(":")[0] not in ("root", "0")
    settings = " ".join(a for op, a in found if op in ("ENV", "ARG"))
    assert not re.search(r"PASSWORD|SECRET|TOKEN|_URL=", settings, re.I), settings
    assert [json.loads(a) for op, a in final if op in ("ENTRYPOINT", "CMD")] == [
        ["/bin/sh", ENTRYPOINT_IN_IMAGE], ["serve"]]
    copied = {a.split()[-1]: a.split()[-2] for op, a in final if op == "COPY"}
    assert copied[ENTRYPOINT_IN_IMAGE] == "ops/deploy/entrypoint.sh"


def health_check() -> list[str]:
    check = next(a for op, a in final_stage() if op == "HEALTHCHECK")
    command: list[str] = json.loads(check[check.index("CMD") + 3:].strip())
    return command


def test_the_health_check_passes_on_a_serving_ledger_and_fails_without_one(api: Any) -> None:
    python, *rest = health_check()
    assert python == "python"
    for port, healthy in ((api.settings.http_port, True), (free_port(), False)):
        done = subprocess.run([sys.executable, *rest], capture_output=True, timeout=30,
                              env={**os.environ, "SSOT_HTTP_PORT": str(port)})
        assert (done.returncode == 0) == healthy, done.stderr


def test_the_backup_cronjob_runs_the_image_the_dockerfile_builds() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    build = re.search(r"docker build -f ops/deploy/Dockerfile -t (\S+) \.",
                      DOCKERFILE.read_text())
    assert build is not None and build.group(1) == f"nexus-ssot:{version}"
    objects = list(yaml.safe_load_all(CRONJOB.read_text()))
    for resource in objects:
        kubernetes_validate.validate(resource, kubernetes_validate.latest_version(),
                                     strict=True)
    cronjob = next(o for o in objects if o["kind"] == "CronJob")
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == build.group(1)
    copied = [a.split()[-1] for op, a in final_stage() if op == "COPY"]
    assert container["command"][-1] in copied  # the script it runs is in the image
    user = [a for op, a in final_stage() if op == "USER"][-1]
    assert str(pod["securityContext"]["runAsUser"]) == user.split(":")[0]


def image_environment() -> dict[str, str]:
    """The ENV of the image's final stage (``$PATH`` left to expand)."""
    found: dict[str, str] = {}
    for op, args in final_stage():
        if op == "ENV":
            found.update(pair.split("=", 1) for pair in args.split())
    return found


def entrypoint(roles: LedgerRoles, port: int, data_dir: Path, stream: tuple[str, str],
               ) -> subprocess.Popen[str]:
    """ops/deploy/entrypoint.sh on this host, as the image runs it: its environment (the
    virtualenv's bin in place of /opt/ssot/bin, a data dir of its own), the service role's
    URL, the owner's for the migration, the NATS of the test."""
    image = image_environment()
    assert image["PATH"] == "/opt/ssot/bin:$PATH"
    env = {**os.environ, **image,
           "PATH": f"{BIN}:{os.environ['PATH']}",
           "SSOT_DATA_DIR": str(data_dir),
           "SSOT_HTTP_PORT": str(port),
           "SSOT_DATABASE_URL": roles.service_url,
           "MIGRATION_DATABASE_URL": roles.owner_url,
           "SERVICE_ROLE": roles.service,
           "SSOT_NATS_STREAM": stream[0], "SSOT_NATS_SUBJECT_PREFIX": stream[1],
           "SSOT_DIGEST_EVERY_EVENTS": "1",
           "SSOT_HTTP_WORKERS": "1"}
    return subprocess.Popen(["/bin/sh", str(ENTRYPOINT), "serve"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def serving(proc: subprocess.Popen[str], url: str, deadline: float) -> bool:
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/v1/health", timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return False


def test_the_entrypoint_migrates_once_as_the_owner_then_serves_as_the_service_role(
        server_url: str, nats_url: str, stream: tuple[str, str], tmp_path: Path) -> None:
    with ledger_roles(server_url) as roles:
        ports = [free_port(), free_port()]
        procs = [entrypoint(roles, port, tmp_path / f"data{i}", stream)
                 for i, port in enumerate(ports)]
        try:
            deadline = time.monotonic() + 120
            up = [serving(p, f"http://127.0.0.1:{port}", deadline)
                  for p, port in zip(procs, ports, strict=True)]
            if not all(up):
                for p in procs:
                    p.kill()
                pytest.fail("\n\n".join(p.communicate()[0] for p in procs))
            # each process is ssot serve itself (exec), without the owner's credentials
            for p in procs:
                environ = Path(f"/proc/{p.pid}/environ").read_bytes().split(b"\0")
                assert b"SSOT_DATABASE_URL=" + roles.service_url.encode() in environ
                assert not [v for v in environ if v.startswith(b"MIGRATION_DATABASE_URL=")]
            with httpx.Client(base_url=f"http://127.0.0.1:{ports[0]}", headers=AUTH) as first, \
                    httpx.Client(base_url=f"http://127.0.0.1:{ports[1]}", headers=AUTH) as second:
                writes_and_reads_as_the_service_role(first, second)
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            outputs = [p.communicate(timeout=60)[0] for p in procs]
        applied = [int(m.group(1)) if (m := re.search(r"migrations: applied (\d+)\b", o))
                   else None for o in outputs]
        assert None not in applied, outputs
        assert sum(applied) == len(available()), outputs  # type: ignore[arg-type]
        assert all(f"granted {roles.service}: ssot_events: SELECT" in o for o in outputs)
        with psycopg.connect(roles.owner_url) as conn:
            assert conn.execute("SELECT count(*), count(DISTINCT version) FROM"
                                " ssot_schema_migrations").fetchone() == (len(available()),) * 2
            assert conn.execute("SELECT count(*) FROM digests").fetchone() != (0,)
    delete_stream(nats_url, f"{stream[0]}_DIGESTS")


def writes_and_reads_as_the_service_role(first: httpx.Client, second: httpx.Client) -> None:
    """Writes through one node, reads through the other; the followers on both follow."""
    for n in range(3):
        first.put("/v1/namespaces/deploy/entries/k", json={"n": n}
                  ).raise_for_status()
    assert second.get("/v1/namespaces/deploy/entries/k").json()["document"] == {"n": 2}
    assert [h["version"] for h in second.get(
        "/v1/namespaces/deploy/entries/k/history").json()["items"]] == [1, 2, 3]
    wait_until(lambda: first.get("/v1/health").json()["views"].get(
        "namespace_stats", {}).get("position") == 3, "the views, as the service role")
    wait_until(lambda: (first.get("/v1/health").json()["broadcaster"] or {}).get(
        "position") == 3, "the broadcaster, as the service role")

