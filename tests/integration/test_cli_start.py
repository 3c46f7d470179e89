"""``ssot`` loads no command's module before that command is asked for: every start of a
command pays only for its own imports."""

from __future__ import annotations

import subprocess
import sys

from nexus_ssot.ops.cli import COMMANDS


def test_starting_ssot_imports_no_commands_module() -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys; import nexus_ssot.ops.cli; "
         "print(sorted(m for m in sys.modules if m.startswith('nexus_ssot.')))"],
        capture_output=True, text=True, check=True).stdout
    modules = {f"nexus_ssot.ops.{at.split(':')[0]}" for at in COMMANDS.values()}
    assert not modules & set(eval(loaded)), loaded
