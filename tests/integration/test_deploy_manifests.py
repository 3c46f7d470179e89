"""The deployment's manifests hold together, checked offline where no Docker engine or
cluster runs: every Kubernetes object against the Kubernetes schemas (kubernetes-validate;
the CloudNativePG Cluster, a custom resource it has no schema for, and the NATS chart's
values by their shape), the compose file against the Compose Specification's schema
(tests/fixtures/compose-spec/), the shell scripts with shellcheck; and what
docs/production.md promises of them: only the API reachable from outside the namespace,
two candidates of each follower, the migration run once as the schema's owner, secrets
only from Secrets and env files, and every ledger setting they name a real one."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import psycopg
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError

from nexus_ssot.ledger.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "ops" / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
COMPOSE_SCHEMA = ROOT / "tests" / "fixtures" / "compose-spec" / "compose-spec.json"
BIN = Path(sys.executable).parent
IMAGE = "nexus-ssot:0.1.0"
#: The ledger's settings, as environment variables.
SETTINGS = {f"SSOT_{name.upper()}" for name in Settings.model_fields}
#: What the image's entrypoint reads besides the settings (ops/deploy/entrypoint.sh).
ENTRYPOINT_VARIABLES = {"MIGRATE", "MIGRATION_DATABASE_URL", "SERVICE_ROLE"}
FOLLOWERS = {"broadcaster": "broadcast", "projector": "project", "digester": "digest"}


def manifests() -> list[tuple[str, dict[str, Any]]]:
    """(file name, object) of every Kubernetes object in ops/deploy/k8s/."""
    return [(path.name, o) for path in sorted(K8S.glob("*.yaml"))
            if path.name != "nats-values.yaml"
            for o in yaml.safe_load_all(path.read_text()) if o]


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for _, o in manifests() if o["kind"] == kind}


def pod_spec(o: dict[str, Any]) -> dict[str, Any]:
    spec = o["spec"]
    if o["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return dict(spec["template"]["spec"])


def test_every_kubernetes_object_is_valid_and_the_custom_one_is_known_to_be_unchecked() -> None:
    version = kubernetes_validate.latest_version()
    unchecked = []
    for name, o in manifests():
        try:
            kubernetes_validate.validate(o, version, strict=True)
        except SchemaNotFoundError:
            unchecked.append((name, o["kind"]))
    assert unchecked == [("cnpg-cluster.yaml", "Cluster")]


def test_the_api_is_ready_on_health_alive_apart_and_scaled_on_cpu() -> None:
    api = of_kind("Deployment")["ssot-api"]
    [container] = pod_spec(api)["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v1/health"
    # alive on the route that answers whatever the database does: an outage restarts nothing
    assert container["livenessProbe"]["httpGet"]["path"] == "/v1/live"
    assert container["startupProbe"]["httpGet"]["path"] == "/v1/live"
    assert api["spec"]["replicas"] >= 2
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert {env[f"SSOT_{k}"] for k in ("BROADCAST", "PROJECTIONS", "DIGESTS")} == {"false"}
    hpa = of_kind("HorizontalPodAutoscaler")["ssot-api"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "ssot-api"
    assert hpa["spec"]["minReplicas"] >= 2
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert of_kind("Service")["ssot-api"]["spec"]["selector"] == \
        api["spec"]["selector"]["matchLabels"]


def test_each_follower_runs_two_candidates_and_every_deployment_has_a_budget() -> None:
    deployments = of_kind("Deployment")
    for component, command in FOLLOWERS.items():
        follower = deployments[f"ssot-{component}"]
        [container] = pod_spec(follower)["containers"]
        assert (follower["spec"]["replicas"], container["args"]) == (2, [command])
    budgets = {json.dumps(p["spec"]["selector"]["matchLabels"], sort_keys=True)
               for p in of_kind("PodDisruptionBudget").values()}
    for deployment in deployments.values():
        assert json.dumps(deployment["spec"]["selector"]["matchLabels"],
                          sort_keys=True) in budgets, deployment["metadata"]["name"]


def test_only_the_api_is_reachable_from_outside_the_namespace() -> None:
    policies = of_kind("NetworkPolicy")
    deny = [p for p in policies.values() if p["spec"]["podSelector"] == {}
            and p["spec"]["policyTypes"] == ["Ingress"] and not p["spec"].get("ingress")]
    assert deny, "no default deny of ingress"
    api_labels = of_kind("Deployment")["ssot-api"]["spec"]["selector"]["matchLabels"]
    for name, policy in policies.items():
        for rule in policy["spec"].get("ingress", []):
            sources = rule.get("from")
            if sources == [{"podSelector": {}}]:
                continue  # the namespace's own pods
            selected = policy["spec"]["podSelector"].get("matchLabels")
            if sources is None:  # from anywhere: the API's port only
                assert selected == api_labels, name
                assert [p["port"] for p in rule["ports"]] == [8080], name
            else:  # the database operator's namespace, to its instances only
                assert selected == {"cnpg.io/cluster": "ssot-pg"}, name
                assert sources == [{"namespaceSelector": {"matchLabels": {
                    "kubernetes.io/metadata.name": "cnpg-system"}}}], name


def test_every_pod_runs_the_image_unprivileged_with_settings_that_exist() -> None:
    config = of_kind("ConfigMap")["ssot-config"]["data"]
    assert set(config) - ENTRYPOINT_VARIABLES <= SETTINGS, set(config) - SETTINGS
    assert not [k for k in config if re.search(r"PASSWORD|SECRET|TOKEN|_URL", k)]
    pods = [o for _, o in manifests() if o["kind"] in ("Deployment", "Job", "CronJob")]
    assert len(pods) == 6
    for o in pods:
        spec = pod_spec(o)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == 10001
        for container in spec["containers"]:
            assert container["image"] == IMAGE
            for variable in container.get("env", []):
                assert variable["name"] in SETTINGS | {"BACKUP_DIR", "SSOT"}, variable
                if re.search(r"_URL|TOKEN", variable["name"]):
                    assert "secretKeyRef" in variable["valueFrom"], variable


def test_the_migration_job_runs_migrate_as_the_schema_owner() -> None:
    [job] = of_kind("Job").values()
    [container] = pod_spec(job)["containers"]
    assert container["args"] == ["migrate", "--grant-to", "ssot_service"]
    [url] = container["env"]
    assert url["valueFrom"]["secretKeyRef"]["name"] == "ssot-migration-database"
    service_secret = of_kind("Secret")["ssot-database"]["stringData"]["url"]
    assert service_secret.startswith("postgresql://ssot_service:")


def test_the_postgres_cluster_has_a_synchronous_standby_and_the_ledgers_roles() -> None:
    [cluster] = of_kind("Cluster").values()
    spec = cluster["spec"]
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    assert spec["instances"] >= 2
    assert spec["postgresql"]["synchronous"]["number"] >= 1
    assert spec["postgresql"]["synchronous"]["dataDurability"] == "required"
    assert spec["bootstrap"]["initdb"]["owner"] == "ssot_owner"
    [service] = spec["managed"]["roles"]
    assert service["name"] == "ssot_service" and service["superuser"] is False
    assert spec["backup"]["barmanObjectStore"]["wal"]  # WAL archived: point-in-time recovery


def test_the_nats_values_ask_for_a_three_node_jetstream_cluster() -> None:
    values = yaml.safe_load((K8S / "nats-values.yaml").read_text())
    assert values["config"]["cluster"] == {"enabled": True, "replicas": 3}
    assert values["config"]["jetstream"]["enabled"] is True
    assert values["config"]["jetstream"]["fileStore"]["pvc"]["enabled"] is True
    assert values["config"]["nats"]["tls"]["enabled"] is True


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def test_the_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.Draft201909Validator(schema)
    assert [e.message for e in validator.iter_errors(compose())] == []
    broken = compose()
    broken["services"]["api"]["replicas"] = 2  # belongs under deploy:
    assert list(validator.iter_errors(broken))  # the schema does catch a misplaced key


def test_the_compose_topology_is_the_production_one() -> None:
    services = compose()["services"]
    primary = " ".join(services["postgres-primary"]["command"])
    assert "synchronous_standby_names=FIRST 1 (standby)" in primary
    assert "synchronous_commit=on" in primary and "archive_mode=on" in primary
    assert "postgres-standby" in services
    nats = [s for s in services if s.startswith("nats-")]
    assert len(nats) == 3
    assert services["api"]["deploy"]["replicas"] == 2
    assert services["api"]["environment"]["SSOT_BROADCAST"] == "false"
    for component, command in FOLLOWERS.items():
        assert services[component]["command"] == [command]
        assert services[component]["deploy"]["replicas"] == 2
    assert services["migrate"]["command"] == ["migrate", "--grant-to", "ssot_service"]
    assert [s for s, v in services.items() if "ports" in v] == ["api"]
    assert "backup.sh" in " ".join(services["backup"]["entrypoint"])


def test_compose_takes_every_secret_from_env_files_whose_examples_are_committed() -> None:
    services = compose()["services"]
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            assert not re.search(r"PASSWORD|SECRET|TOKEN|_URL", key), (name, key)
            assert key in SETTINGS | ENTRYPOINT_VARIABLES | {"PGDATA", "BACKUP_DIR"}, key
            assert value is not None
        for env_file in service.get("env_file", []):
            example = DEPLOY / f"{env_file}.example"
            assert example.is_file(), example
            for line in example.read_text().splitlines():
                key = line.split("=", 1)[0]
                if key.startswith("SSOT_"):
                    assert key in SETTINGS, (example.name, key)
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "ops/deploy/compose/*.env" in ignored
    assert "**/*.env" in (ROOT / ".dockerignore").read_text().splitlines()


@pytest.mark.parametrize("script", ["entrypoint.sh", "backup.sh", "compose/postgres-init.sh",
                                    "compose/postgres-standby.sh"])
def test_the_shell_scripts_pass_shellcheck(script: str) -> None:
    done = subprocess.run([str(BIN / "shellcheck"), "--shell=sh", str(DEPLOY / script)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_nats_node_configuration_is_valid_and_needs_its_credentials() -> None:
    conf = DEPLOY / "compose" / "nats.conf"
    check = [str(BIN / "nats-server"), "-c", str(conf), "--name", "nats-1", "-t"]
    creds = {"NATS_USER": "ssot", "NATS_PASSWORD": "example"}
    valid = subprocess.run(check, capture_output=True, text=True, timeout=30,
                           env={"PATH": "/usr/bin:/bin", **creds})
    assert valid.returncode == 0, valid.stderr
    without = subprocess.run(check, capture_output=True, text=True, timeout=30,
                             env={"PATH": "/usr/bin:/bin"})
    assert without.returncode != 0 and "NATS_USER" in without.stderr


def postgres_parameters() -> dict[str, str]:
    """Every PostgreSQL parameter the compose file and the CloudNativePG example set."""
    found: dict[str, str] = {}
    command = compose()["services"]["postgres-primary"]["command"]
    for flag, setting in zip(command[1::2], command[2::2], strict=True):
        assert flag == "-c"
        name, value = setting.split("=", 1)
        found[name] = value
    [cluster] = of_kind("Cluster").values()
    found.update(cluster["spec"]["postgresql"]["parameters"])
    return found


def test_every_postgresql_parameter_set_is_one_the_server_knows(server_url: str) -> None:
    parameters = postgres_parameters()
    assert parameters["synchronous_commit"] == "on"
    with psycopg.connect(server_url) as conn:
        known = {name: enumvals for name, enumvals in conn.execute(
            "SELECT name, enumvals FROM pg_settings WHERE name = ANY(%s)",
            (list(parameters),))}
    assert set(parameters) - set(known) == set()
    for name, value in parameters.items():
        if known[name] is not None:  # an enum: the value is one of its values
            assert value in known[name], (name, value)
