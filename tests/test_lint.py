"""The lint gate: `ruff check .` under the rule set in pyproject.toml ([tool.ruff.lint]).

Why a test and not a separate CI step: the README's one test command is what CI runs, so a
contributor sees an unsorted import or an unused variable in the same place as a failing test.
The rules are the bug-finding ones (pyflakes, bugbear, pyupgrade, isort), not style taste.
"""

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ruff_check_passes():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is missing: it is a dev dependency (pip install -e '.[dev]')"
    proc = subprocess.run([ruff, "check", "--no-cache", "--output-format", "concise", "."], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"ruff check . found problems (fix them, or `ruff check . --fix`):\n{proc.stdout}{proc.stderr}"
