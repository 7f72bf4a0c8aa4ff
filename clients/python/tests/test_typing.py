"""The package is typed (py.typed) and passes `mypy --strict`."""

from __future__ import annotations

import importlib.util
import os
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


# Calls mypy must refuse (each line marked `# bad`) beside ones it must accept:
# the blocking and asyncio clients have explicit keyword-only parameters.
USES = '''
import legacygpu
from legacygpu import inputs

def sync(client: legacygpu.Client) -> None:
    client.submit("echo", {}, priority="HIGH", timeout_s=1.0, accept_timeout=0.5, idempotency_key="k")
    client.submit("echo", {}, timeout_s="10")  # bad
    client.submit("echo", {}, max_attempts=1.5)  # bad
    client.submit("echo", {}, priorty="HIGH")  # bad
    client.run("echo", {}, timeout=3, max_attempts=2)
    client.run("echo", {}, requirements=["gpu"])  # bad
    client.submit_many("echo", [{}], in_flight=8, queue_timeout_s=5)
    client.submit_many("echo", [{}], idempotency_key="k")  # bad
    list(client.map("echo", [{}], in_flight=4, priority=2))
    list(client.map("echo", [{}], in_flght=4))  # bad
    client.generate("m", "hi", max_tokens=8, timeout_s=30)
    client.generate("m", "hi", max_tokens="8")  # bad
    legacygpu.Client("ws://h:8765", give_up_after_s=None, ca_hash="ab" * 32)
    legacygpu.Client("ws://h:8765", give_up_after="60")  # bad
    inputs.gpu("matmul", m=2, k=2, n=2, seed=1)

async def aio(client: legacygpu.AsyncClient) -> None:
    await client.submit("echo", {}, accept_timeout=1)
    await client.submit("echo", {}, accept_timeout="1")  # bad
    await client.submit_many("echo", [{}], timeout_s=1.0)
    await client.submit_many("echo", [{}], task_id="x")  # bad
'''


def test_mypy_refuses_bad_keyword_arguments(tmp_path):
    if importlib.util.find_spec("mypy") is None:
        skip_or_fail("mypy is not installed (pip install mypy)")
    (tmp_path / "uses.py").write_text(USES)
    done = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"),
                           "--no-error-summary", "--hide-error-context", "uses.py"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "MYPYPATH": str(SRC.parent)})
    flagged = {int(line.split(":")[1]) for line in done.stdout.splitlines() if ": error:" in line}
    bad = {n for n, line in enumerate(USES.splitlines(), start=1) if line.endswith("# bad")}
    assert flagged == bad, done.stdout
