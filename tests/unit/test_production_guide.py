"""docs/production.md and the deployment files name only settings that exist: every
``SSOT_*`` variable they mention is a field of the settings (``ledger/settings.py``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nexus_ssot.ledger.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {f"SSOT_{name.upper()}" for name in Settings.model_fields}
NAMED = [ROOT / "docs" / "production.md", *sorted((ROOT / "ops" / "deploy").rglob("*"))]


@pytest.mark.parametrize("path", [p for p in NAMED if p.is_file()],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_every_ssot_variable_named_is_a_setting(path: Path) -> None:
    named = set(re.findall(r"\bSSOT_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(errors="replace")))
    assert named - SETTINGS == set()
