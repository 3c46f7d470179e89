"""The built wheel, not only the source tree: one import root, migrations included."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_installs_everything_under_one_import_root(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                    "--wheel-dir", str(tmp_path), str(ROOT)], check=True, timeout=300)
    wheel = next(tmp_path.glob("nexus_ssot-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    roots = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert roots == {"nexus_ssot"}  # never generic top-level names like `api`
    for package in ("ledger", "projections", "api", "ops", "client"):
        assert f"nexus_ssot/{package}/__init__.py" in names
    migrations = {n for n in names if n.startswith("nexus_ssot/ledger/migrations/")}
    assert {Path(m).name for m in migrations} >= {
        f"{sql.name}" for sql in (ROOT / "ledger" / "migrations").glob("*.sql")}
    console = ROOT / "api" / "console"  # the web console's files, served as they are
    assert {n.removeprefix("nexus_ssot/api/console/") for n in names
            if n.startswith("nexus_ssot/api/console/")} >= {
        str(f.relative_to(console)) for f in console.rglob("*") if f.is_file()}
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "ssot = nexus_ssot.ops.cli:run" in zipfile.ZipFile(wheel).read(
        entry_points).decode()
