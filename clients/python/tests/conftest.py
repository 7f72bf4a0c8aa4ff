"""Fixtures: a real coordinator and workers on 127.0.0.1 (see cluster.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from cluster import FAST, Coordinator, Proc, skip_or_fail, until, worker  # noqa: E402

import legacygpu  # noqa: E402

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Coordinator]:
    """One coordinator with one CPU worker (8 slots), shared by a module's tests."""
    c = Coordinator(FAST)
    w = worker(c.ws_url, "w1", "--slots", "8", "--no-gpu")
    admin = legacygpu.Admin(c.http_url)
    until(lambda: admin.workers()["total"] >= 1, "the worker registered")
    yield c
    w.kill9()
    c.kill9()


@pytest.fixture
def coordinator() -> Iterator[Coordinator]:
    """A coordinator of the test's own, with no workers."""
    c = Coordinator(FAST)
    yield c
    c.kill9()


@pytest.fixture
def procs() -> Iterator[list]:
    """Processes a test starts; all killed at the end."""
    started: list = []
    yield started
    for p in started:
        if isinstance(p, (Proc, Coordinator)):
            p.kill9()


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory holding the tiny colour classifier as `tiny`:
    $LEGACYGPU_TEST_MODELS_DIR (the Rust runner writes it), else built by
    scripts/make_tiny_classifier.py when Python's onnx is installed."""
    env = os.environ.get("LEGACYGPU_TEST_MODELS_DIR")
    if env:
        return Path(env)
    out = tmp_path_factory.mktemp("models")
    script = REPO / "scripts" / "make_tiny_classifier.py"
    done = subprocess.run([sys.executable, str(script), "--out", str(out), "--name", "tiny"], capture_output=True)
    if done.returncode != 0:
        skip_or_fail("no LEGACYGPU_TEST_MODELS_DIR and cannot build the tiny model (pip install onnx numpy)")
    return out



@pytest.fixture(scope="session")
def llm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory holding the tiny random-weight GGUF as `tiny`:
    $LEGACYGPU_TEST_LLM_DIR (the Rust runner writes it), else built by
    scripts/make_tiny_gguf.py when Python's gguf is installed."""
    env = os.environ.get("LEGACYGPU_TEST_LLM_DIR")
    if env:
        return Path(env)
    out = tmp_path_factory.mktemp("llm")
    script = REPO / "scripts" / "make_tiny_gguf.py"
    done = subprocess.run([sys.executable, str(script), "--out", str(out / "tiny.gguf")], capture_output=True)
    if done.returncode != 0:
        skip_or_fail("no LEGACYGPU_TEST_LLM_DIR and cannot build the tiny GGUF (pip install gguf numpy)")
    return out
