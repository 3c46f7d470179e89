"""The per-namespace label: off by default, and never more than its limit of names."""

from __future__ import annotations

from prometheus_client import REGISTRY

from nexus_ssot.ledger.metrics import OTHER_NAMESPACE, NamespaceLabels


def count(namespace: str) -> float:
    value = REGISTRY.get_sample_value("ssot_debug_namespace_writes_total",
                                      {"namespace": namespace})
    return value or 0.0


def test_namespaces_past_the_limit_count_as_other() -> None:
    labels = NamespaceLabels(True, limit=2)
    assert [labels.label(n) for n in ("u1", "u2", "u3", "u1", "u4")] == \
        ["u1", "u2", OTHER_NAMESPACE, "u1", OTHER_NAMESPACE]
    before = count(OTHER_NAMESPACE)
    labels.count_write("u5")
    assert count(OTHER_NAMESPACE) == before + 1 and count("u5") == 0


def test_off_counts_nothing() -> None:
    NamespaceLabels(False, limit=100).count_write("u-off")
    assert count("u-off") == 0
