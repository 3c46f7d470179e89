"""How many examples a property test tries: a fixed, modest number in `make test` (the
suite must be fast and give the same answer every run), ten times as many under `make
fuzz` (SSOT_HYPOTHESIS_PROFILE=fuzz, random seeds), where exploring is the point."""

from __future__ import annotations

import os

FACTOR = 10 if os.environ.get("SSOT_HYPOTHESIS_PROFILE") == "fuzz" else 1


def examples(n: int) -> int:
    """``n`` in `make test`, ``10 n`` in `make fuzz`."""
    return n * FACTOR
