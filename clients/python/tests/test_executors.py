"""The input helpers with the real executors: inference from a path and from
bytes (the tiny colour classifier), GPU matmul and n-body."""

from __future__ import annotations

import os

import pytest
from cluster import FAST, Coordinator, until, worker
from images import png

import legacygpu
from legacygpu import inputs


def test_inference_from_a_path_and_from_bytes(procs, models_dir, tmp_path):
    c = Coordinator(FAST)
    procs.append(c)
    procs.append(worker(c.ws_url, "w", "--models-dir", str(models_dir), "--no-gpu", "--slots", "2"))
    red = tmp_path / "red.png"
    red.write_bytes(png(32, 32, (230, 10, 10)))
    with legacygpu.Client(c.ws_url) as client:
        by_path = client.run("inference", inputs.inference("tiny", red, top_k=2), timeout=30)
        by_bytes = client.run("inference", inputs.inference("tiny", png(40, 24, (10, 20, 240))), timeout=30)
        by_str = client.run("inference", inputs.inference("tiny", str(red)), timeout=30)
    assert by_path["model"] == "tiny" and len(by_path["top_k"]) == 2
    assert by_path["top_k"][0]["label"] == "red" == by_str["top_k"][0]["label"]
    assert by_bytes["top_k"][0]["label"] == "blue"


def test_gpu_matmul_and_nbody(procs):
    c = Coordinator(FAST)
    procs.append(c)
    procs.append(worker(c.ws_url, "gpu-box", "--slots", "1"))
    admin = legacygpu.Admin(c.http_url)
    info = until(lambda: admin.workers()["workers"], "the worker registered")[0]
    if not info["capabilities"].get("gpus"):
        if os.environ.get("LEGACYGPU_REQUIRE_GPU") == "1":
            pytest.fail("no GPU adapter, and LEGACYGPU_REQUIRE_GPU=1")
        pytest.skip("the worker found no GPU adapter (install mesa-vulkan-drivers for lavapipe)")
    with legacygpu.Client(c.ws_url) as client:
        mm = client.run("gpu", inputs.matmul([1, 2, 3, 4], [5, 6, 7, 8], m=2, k=2, n=2), timeout=60)
        assert mm["c"] == pytest.approx([19.0, 22.0, 43.0, 50.0], rel=1e-4)
        seeded = client.run("gpu", inputs.matmul(m=16, k=16, n=16, seed=3, device="cpu"), timeout=60)
        assert seeded["device"] == "cpu" and len(seeded["c"]) == 256
        two = [{"pos": (-1, 0, 0), "vel": (0, 0.5, 0), "mass": 1.0}, {"pos": (1, 0, 0), "vel": (0, -0.5, 0), "mass": 1.0}]
        nb = client.run("gpu", inputs.nbody(two, steps=20), timeout=60)
        assert nb["n"] == 2 and nb["momentum"] == pytest.approx([0, 0, 0], abs=1e-4)
