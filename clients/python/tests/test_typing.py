"""The package is typed (py.typed) and passes `mypy --strict`."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from cluster import skip_or_fail

SRC = Path(__file__).resolve().parents[1] / "src" / "legacygpu"


def test_mypy_strict(tmp_path):
    if importlib.util.find_spec("mypy") is None:
        skip_or_fail("mypy is not installed (pip install mypy)")
    done = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path), str(SRC)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
