"""The documentation holds together: every relative link in README.md and docs/*.md leads
to a file that exists and, with a ``#anchor``, to a heading that exists; every page of
docs/ is reachable from the README; and every command shown with its output outside the
README's tour, docs/schemas.md and docs/tracing.md (which tests/integration runs) says it
is an example."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
#: The pages whose console blocks a test runs and compares: the README's tour
#: (tests/integration/test_readme_tour.py), docs/schemas.md (test_schemas_page.py) and
#: docs/tracing.md (test_tracing.py, on its own server) and docs/api.md (test_api_page.py).
EXECUTED = {README, *(ROOT / "docs" / page for page in ("schemas.md", "tracing.md", "api.md"))}

_FENCE = re.compile(r"^\s*(```|~~~)")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_CODE_SPAN = re.compile(r"`+[^`]*`+")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_EXAMPLE_MARK = "not executed"


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the lines outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in prose_lines(page.read_text(encoding="utf-8")):
        match = _HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> list[tuple[int, str]]:
    found = []
    for number, line in prose_lines(page.read_text(encoding="utf-8")):
        for target in _LINK.findall(_CODE_SPAN.sub("", line)):
            found.append((number, target))
    return found


def broken(page: Path, target: str) -> str | None:
    """Why ``target``, linked from ``page``, leads nowhere; None when it resolves."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:: not ours to check
        return None
    path, _, anchor = target.partition("#")
    destination = (page.parent / path).resolve() if path else page
    if not destination.exists():
        return f"no file {path}"
    if anchor:
        if destination.suffix != ".md":
            return f"an anchor into {path}, which is not a markdown page"
        if anchor not in anchors(destination):
            return f"no heading #{anchor} in {destination.relative_to(ROOT)}"
    return None


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    problems = [f"{page.relative_to(ROOT)}:{number}: ({target}) {why}"
                for number, target in links(page)
                if (why := broken(page, target)) is not None]
    assert not problems, "\n".join(problems)


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {(README.parent / target.partition("#")[0]).resolve()
              for _, target in links(README)}
    orphans = [str(page.relative_to(ROOT)) for page in PAGES[1:] if page not in linked]
    assert not orphans, f"not linked from README.md: {orphans}"


def shows_output(block: list[str]) -> bool:
    """A shell block with a line after a ``$ command`` that is neither a command nor its
    continuation: that line is the command's output."""
    seen_command = continued = False
    for line in block:
        if line.startswith("$ ") or continued:
            seen_command, continued = True, line.endswith("\\")
        elif seen_command and line.strip():
            return True
    return False


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_shown_output_is_run_by_a_test_or_marked_as_an_example(page: Path) -> None:
    lines = page.read_text(encoding="utf-8").splitlines()
    unmarked, i = [], 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        opening, info = i, lines[i].strip()[3:].strip()
        i += 1
        block = []
        while i < len(lines) and not _FENCE.match(lines[i]):
            block.append(lines[i].strip())
            i += 1
        i += 1
        if info == "console":
            # The executed pages: run and compared by the integration lane. Elsewhere
            # nothing runs a console block, so it would show output no test checks.
            if page not in EXECUTED:
                unmarked.append(f"{page.relative_to(ROOT)}:{opening + 1}: a console block "
                                "outside the executed pages is not run by any test")
            continue
        if not shows_output(block):
            continue
        before = [line for line in lines[:opening] if line.strip()]
        if not before or _EXAMPLE_MARK not in before[-1]:
            unmarked.append(f"{page.relative_to(ROOT)}:{opening + 1}: output shown without "
                            f"a line saying it is an example ('{_EXAMPLE_MARK}')")
    assert not unmarked, "\n".join(unmarked)
