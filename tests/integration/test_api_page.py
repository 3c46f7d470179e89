"""docs/api.md, run for real: every ```console block's commands are executed against a
fresh server and their output must match the page, modulo times and ids.

To refresh the page after an intended change of output:
    .venv/bin/python -m tests.integration.test_api_page --update
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_readme_tour import ROOT, page_main, run_page, steps

PAGE = ROOT / "docs" / "api.md"


@pytest.mark.slow
def test_the_api_page_runs_as_written(server_url: str, tmp_path: Path) -> None:
    assert len(steps(PAGE.read_text())) >= 4, "the page must keep its examples"
    run_page(PAGE, server_url, tmp_path)


if __name__ == "__main__":
    page_main(PAGE, __file__)
