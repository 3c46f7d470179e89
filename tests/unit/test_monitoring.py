"""ops/monitoring agrees with the docs: every alert has a runbook entry in
docs/operations.md and a promtool case that makes it fire and resolve, and every metric
the rules and the dashboard use is in docs/metrics.md's table."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "ops" / "monitoring"
_SUFFIXES = re.compile(r"_(bucket|sum|count|total)$")


def alerts() -> list[dict[str, Any]]:
    rules = yaml.safe_load((MONITORING / "alerts.rules.yml").read_text())
    return [r for g in rules["groups"] for r in g["rules"]]


def documented_metrics() -> set[str]:
    table = (ROOT / "docs" / "metrics.md").read_text()
    return {_SUFFIXES.sub("", name) for name in re.findall(r"^\| `(ssot_[a-z_]+)` \|", table,
                                                           re.MULTILINE)}


def used_metrics(text: str) -> set[str]:
    return {_SUFFIXES.sub("", n) for n in re.findall(r"\b(ssot_[a-z_]+)", text)}


def test_every_alert_has_a_runbook_entry() -> None:
    page = (ROOT / "docs" / "operations.md").read_text()
    anchors = set(re.findall(r'<a id="([a-z0-9-]+)"></a>', page))
    for rule in alerts():
        link = rule["annotations"]["runbook"]
        assert link.startswith("docs/operations.md#"), rule["alert"]
        assert link.split("#", 1)[1] in anchors, f"{rule['alert']}: no entry {link}"


def test_every_alert_fires_and_resolves_in_a_promtool_case() -> None:
    cases = yaml.safe_load((MONITORING / "tests" / "alerts.test.yml").read_text())["tests"]
    fired, quiet = set(), set()
    for case in cases:
        for check in case["alert_rule_test"]:
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {r["alert"] for r in alerts()}
    assert names - fired == set(), "alerts no case makes fire"
    assert names - quiet == set(), "alerts no case sees resolved"


def test_the_rules_and_the_dashboard_use_documented_metrics_only() -> None:
    known = documented_metrics()
    assert {"ssot_http_requests", "ssot_broadcaster_lag_seconds"} <= known
    rules = (MONITORING / "alerts.rules.yml").read_text() + \
        (MONITORING / "recording.rules.yml").read_text()
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    assert used_metrics(rules) - known == set()
    assert used_metrics(exprs) - known == set()
