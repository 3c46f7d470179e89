"""What every lane shares: the hypothesis profiles.

``make test`` runs the ``ci`` profile: derandomized, so a clean clone draws the same
examples every time and a red run is a bug, not bad luck. ``make fuzz`` selects ``fuzz``
(``SSOT_HYPOTHESIS_PROFILE=fuzz``): fresh random seeds and more examples per property."""

from __future__ import annotations

import os

import hypothesis.internal.observability  # noqa: F401  (see below)
import schemathesis.reporting.html.writer
import schemathesis.reporting.junitxml  # noqa: F401
from hypothesis import HealthCheck, settings

# Imported up front: hypothesis's and schemathesis's pytest plugins otherwise import (and
# assertion-rewrite) these at session end, and on CPython 3.11 that ast.parse can fail
# spuriously with "AST constructor recursion depth mismatch" once test threads have run
# (CPython gh-106905), failing a green run at its very end.

settings.register_profile(
    "ci", derandomize=True, database=None, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "fuzz", derandomize=False, database=None, deadline=None, print_blob=True,
    max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("SSOT_HYPOTHESIS_PROFILE", "ci"))
