"""docs/schemas.md, run for real: every ```console block's commands are executed against a
fresh server and their output must match the page, modulo times, ids and durations.

To refresh the page after an intended change of output:
    .venv/bin/python -m tests.integration.test_schemas_page --update
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.integration.test_readme_tour import ROOT, normalize, page_main, run_page, steps

PAGE = ROOT / "docs" / "schemas.md"
_DURATION = re.compile(r"\b\d+(\.\d+)?s\b")


def _normalize(text: str) -> str:
    """``normalize``, durations too, and a table's columns however wide they came out."""
    return re.sub(r" +", " ", _DURATION.sub("<seconds>", normalize(text)))


@pytest.mark.slow
def test_the_schemas_page_runs_as_written(server_url: str, tmp_path: Path) -> None:
    assert len(steps(PAGE.read_text())) >= 10, "the page must keep its examples"
    run_page(PAGE, server_url, tmp_path, _normalize)


if __name__ == "__main__":
    page_main(PAGE, __file__)
