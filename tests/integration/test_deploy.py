"""The deployment files hold together, checked where no Docker engine runs: the image
ops/deploy/Dockerfile builds (hadolint clean) comes from a base pinned by tag and digest,
runs as an unprivileged user, carries no secret and checks its health on /v1/health; the
backup CronJob names that image by the tag its build command gives, runs a script the
image holds, and is a valid Kubernetes object (kubernetes-validate, offline)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from tests.integration.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "ops" / "deploy" / "Dockerfile"
CRONJOB = ROOT / "ops" / "deploy" / "k8s" / "backup-cronjob.yaml"
BIN = Path(sys.executable).parent


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
        ["ssot"], ["serve"]]


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
