"""`pip install ./clients/python` gives an importable, typed package that
depends on websockets only."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from cluster import skip_or_fail

PACKAGE = Path(__file__).resolve().parents[1]


def test_pip_install_gives_a_typed_package(tmp_path):
    src = tmp_path / "src-copy"
    # A copy, so that the build leaves nothing in the checkout.
    shutil.copytree(PACKAGE, src, ignore=shutil.ignore_patterns("tests", "build", "*.egg-info", "__pycache__"))
    target = tmp_path / "site"
    # No build isolation: tests download nothing (CI installs setuptools and wheel).
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps",
                           "--target", str(target), str(src)], capture_output=True, text=True, timeout=120)
    if done.returncode != 0 and ("No module named" in done.stderr or "bdist_wheel" in done.stderr):
        skip_or_fail(f"no build backend installed (pip install setuptools wheel): {done.stderr.strip()[-200:]}")
    assert done.returncode == 0, done.stderr
    assert (target / "legacygpu" / "py.typed").exists()
    meta = next(target.glob("legacygpu-*.dist-info")) / "METADATA"
    text = meta.read_text()
    assert "Requires-Python: >=3.9" in text
    assert [line for line in text.splitlines() if line.startswith("Requires-Dist:") and "extra" not in line] == [
        "Requires-Dist: websockets>=15"]
    check = subprocess.run([sys.executable, "-c", "import legacygpu, sys; print(legacygpu.__file__, legacygpu.__version__)"],
                           capture_output=True, text=True, env={"PYTHONPATH": str(target)}, timeout=60)
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith(str(target))
