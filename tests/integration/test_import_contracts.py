"""The layering is enforced, not hoped for: import-linter's contracts (pyproject.toml)
hold on the tree, and they catch a forbidden import even one hidden inside a function."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PARTS = ("ledger", "integrity", "access", "projections", "api", "ops", "client")
LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")


def import_tree(at: Path) -> Path:
    """The parts copied under one ``nexus_ssot`` package, as the wheel installs them."""
    package = at / "nexus_ssot"
    package.mkdir()
    (package / "__init__.py").touch()
    for part in PARTS:
        shutil.copytree(ROOT / part, package / part,
                        ignore=shutil.ignore_patterns("__pycache__", "*.sql"))
    return at


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LINT_IMPORTS, "--no-cache", str(ROOT / "pyproject.toml")],
                          cwd=tree, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=120)


def test_the_tree_keeps_every_contract(tmp_path: Path) -> None:
    result = lint_imports(import_tree(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout


LAYERS = "Layers: ops -> api -> (projections | integrity | access) -> ledger BROKEN"
CLIENT = "The client SDK depends on nothing of ours but the pure subject naming it shares BROKEN"


@pytest.mark.parametrize(("module", "imported", "broken"), [
    ("ledger/settings.py", "nexus_ssot.projections", LAYERS),  # the write model reaching up
    ("integrity/merkle.py", "nexus_ssot.projections", LAYERS),  # two siblings of one layer
    ("api/app.py", "nexus_ssot.ops", LAYERS),
    ("client/subscriber.py", "nexus_ssot.ledger.settings", CLIENT),
])
def test_a_forbidden_import_inside_a_function_breaks_a_contract(
        tmp_path: Path, module: str, imported: str, broken: str) -> None:
    tree = import_tree(tmp_path)
    planted = tree / "nexus_ssot" / module
    planted.write_text(planted.read_text() + f"\n\ndef _planted() -> None:\n"
                                             f"    import {imported}  # noqa\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert broken in result.stdout


def test_an_import_cycle_breaks_a_contract(tmp_path: Path) -> None:
    tree = import_tree(tmp_path)
    errors = tree / "nexus_ssot" / "ledger" / "errors.py"
    errors.write_text(errors.read_text() + "\n\ndef _planted() -> None:\n"
                                           "    from nexus_ssot.ledger import settings  # noqa\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "No cycles are allowed in nexus_ssot.ledger." in result.stdout
