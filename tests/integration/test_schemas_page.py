"""docs/schemas.md, run for real: every ```console block's commands are executed against a
fresh server and their output must match the page, modulo times, ids and durations.

To refresh the page after an intended change of output:
    .venv/bin/python -m tests.integration.test_schemas_page --update
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

import pytest

from tests.integration.test_readme_tour import ROOT, normalize, run_page, steps, update_page

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
    if "--update" in sys.argv:
        with tempfile.TemporaryDirectory() as folder:
            update_page(PAGE, os.environ.get("SSOT_DATABASE_URL",
                                             "postgresql://root@127.0.0.1:5432/postgres"),
                        Path(folder))
    else:
        pytest.main([__file__])
