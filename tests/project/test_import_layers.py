"""The stages' layering holds (pyproject's [tool.importlinter] contracts, docs/architecture.md):
`lint-imports` exits 0, so an import from a lower stage into a higher one, or between training and
retrieval or sources and models, fails CI; function-level imports count too."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_lint_imports():
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.exists():
        exe = shutil.which("lint-imports")
    if exe is None:
        pytest.fail("lint-imports not found: install the test extra (import-linter, pinned in requirements.lock)")
    # This checkout's package, whatever an editable install elsewhere points at.
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([str(exe), "--no-cache"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
