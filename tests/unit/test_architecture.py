"""The architecture stays visible: modules stay small enough to read, no module reaches
into another's private names, and no import hides at the bottom of a module to dodge a
cycle. (The layering itself is import-linter's: pyproject.toml [tool.importlinter],
checked by ``make lint-imports`` and tests/integration/test_import_contracts.py.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PARTS = ("ledger", "integrity", "access", "projections", "api", "ops", "client")
MAX_LINES = 600


def modules() -> list[Path]:
    return sorted(p for part in PARTS for p in (ROOT / part).rglob("*.py"))


def tree(path: Path) -> ast.Module:
    """A module's syntax tree, parsed by the test that checks it and dropped after it:
    parsed as this file was collected, every module cost each worker ~1.5 s of CPU for
    the one that runs these tests, and the trees kept were walked by every later full
    collection of the garbage collector. On CPython 3.11, ``ast.parse`` beside another
    thread's ``compile`` fails spuriously with "AST constructor recursion depth mismatch"
    (CPython gh-106905): the unit lane runs before any integration file on its worker
    (tests/conftest.py), so no server's thread of an earlier test is compiling meanwhile."""
    return ast.parse(path.read_text(encoding="utf-8"))


#: A relative import from another package.
RELATIVE_IMPORT = ast.parse("from ..replay import _x").body[0]


def dotted(path: Path) -> str:
    """The import name of a module file (the parts install under ``nexus_ssot``)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["nexus_ssot", *parts])


def imported_from(path: Path, node: ast.ImportFrom) -> str:
    """The absolute module an ``from … import`` names."""
    if not node.level:
        return node.module or ""
    package = dotted(path).split(".")
    if path.name != "__init__.py":
        package.pop()
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def test_the_parts_are_all_checked() -> None:
    assert len(modules()) > 50
    assert all((ROOT / part / "__init__.py").is_file() for part in PARTS)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_is_too_long_to_read(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{lines} lines: split it by concept"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_another_modules_private_names(path: Path) -> None:
    me = dotted(path)
    reached = [
        f"{source}.{alias.name}"
        for node in ast.walk(tree(path)) if isinstance(node, ast.ImportFrom)
        for source in [imported_from(path, node)]
        if source.startswith("nexus_ssot") and source != me
        for alias in node.names
        if alias.name.startswith("_") and not alias.name.startswith("__")
    ]
    assert not reached, "make what is shared public, in the module it belongs to"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_level_imports_come_first(path: Path) -> None:
    body = tree(path).body
    seen_code = False
    late = []
    for node in body:
        is_docstring = (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
                        and isinstance(node.value.value, str))
        if isinstance(node, ast.Import | ast.ImportFrom):
            if seen_code:
                late.append(node.lineno)
        elif not is_docstring and not isinstance(node, ast.If):  # `if TYPE_CHECKING:`
            seen_code = True
    assert not late, f"imports after code at lines {late}: untangle the cycle instead"


def test_the_private_name_check_sees_relative_imports() -> None:
    path = ROOT / "ops" / "backup" / "commands.py"
    node = RELATIVE_IMPORT
    assert isinstance(node, ast.ImportFrom)
    assert imported_from(path, node) == "nexus_ssot.ops.replay"
