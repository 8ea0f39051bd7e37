"""Every script in tools/ imports and explains itself."""

import subprocess
import sys

import pytest

from conftest import ROOT

TOOLS = sorted((ROOT / "tools").glob("*.py"))


@pytest.mark.parametrize("tool", TOOLS, ids=lambda path: path.name)
def test_tool_help(tool):
    result = subprocess.run([sys.executable, str(tool), "--helpshort"], capture_output=True, text=True,
                            timeout=120)
    # absl's help flags exit with 1 after printing the help.
    assert "Traceback" not in result.stderr, result.stderr
    assert "flags:" in result.stdout and "--" in result.stdout
