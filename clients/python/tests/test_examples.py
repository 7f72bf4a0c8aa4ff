"""The examples run against a real cluster.

examples/chat.py needs LLM streaming through the coordinator, which main
does not forward yet; its test comes with that."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from cluster import FAST, Coordinator, worker
from images import png

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(EXAMPLES.parent / "src"), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True,
                          timeout=120, env=env, stdin=subprocess.DEVNULL)


def counts(out: str) -> dict:
    return {k: int(v) for k, v in re.findall(r"(frames|remote|local fallback): (\d+)", out)}


def test_game_loop_offloads_frames(procs):
    c = Coordinator(FAST)
    procs.append(c)
    procs.append(worker(c.ws_url, "w", "--no-gpu", "--slots", "2"))
    # A generous deadline: a loaded test machine must not turn this into a fallback test.
    done = run_example("game_loop.py", "--coordinator", c.ws_url, "--frames", "30", "--fps", "120",
                       "--deadline-ms", "2000")
    assert done.returncode == 0, done.stderr
    assert counts(done.stdout) == {"frames": 30, "remote": 30, "local fallback": 0}, done.stdout
    assert "ball-0: position" in done.stdout


def test_game_loop_falls_back_locally_when_the_cluster_is_late(procs):
    c = Coordinator(FAST)  # no worker: every frame's task waits past its deadline
    procs.append(c)
    done = run_example("game_loop.py", "--coordinator", c.ws_url, "--frames", "10", "--fps", "120",
                       "--deadline-ms", "5")
    assert done.returncode == 0, done.stderr
    assert counts(done.stdout) == {"frames": 10, "remote": 0, "local fallback": 10}, done.stdout
    # The balls fell under the local integrator.
    first = re.search(r"ball-0: position \(([-\d.]+), ([-\d.]+)", done.stdout)
    assert first and float(first.group(2)) < 3.0


def test_classify_folder(procs, models_dir, tmp_path):
    c = Coordinator(FAST)
    procs.append(c)
    procs.append(worker(c.ws_url, "w", "--models-dir", str(models_dir), "--no-gpu", "--slots", "4"))
    colours = {"red": (230, 10, 10), "green": (10, 220, 20), "blue": (10, 20, 240)}
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(12):
        name = list(colours)[i % 3]
        (folder / f"{i:02d}-{name}.png").write_bytes(png(24 + i, 32, colours[name]))
    (folder / "notes.txt").write_text("not an image")
    done = run_example("classify_folder.py", "--coordinator", c.ws_url, "--model", "tiny", str(folder))
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines() if line.endswith(")"))
    assert len(lines) == 12
    for file, label in lines.items():
        assert label.split()[0] == file.split("-")[1].removesuffix(".png"), done.stdout
    assert "12/12" in done.stderr and "12 images, 0 failed" in done.stdout
