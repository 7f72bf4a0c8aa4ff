"""The examples run against a real cluster (chat.py with a worker serving the
tiny random-weight GGUF, streamed through the coordinator)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from cluster import FAST, Coordinator, until, worker
from images import png

import legacygpu

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, *args: str, stdin: "str | None" = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(EXAMPLES.parent / "src"), env.get("PYTHONPATH", "")])
    if stdin is None:
        return subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True,
                              timeout=120, env=env, stdin=subprocess.DEVNULL)
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True,
                          timeout=120, env=env, input=stdin)


def llm_cluster(procs, llm_dir):
    c = Coordinator(FAST)
    procs.append(c)
    procs.append(worker(c.ws_url, "llm", "--models-dir", str(llm_dir), "--no-gpu", "--gpu-layers", "0"))
    admin = legacygpu.Admin(c.http_url)
    until(lambda: any("tiny" in w.get("models", []) for w in admin.workers()["workers"]), "the LLM worker")
    return c


def test_generate_streams_through_the_cluster(procs, llm_dir):
    c = llm_cluster(procs, llm_dir)
    with legacygpu.Client(c.ws_url) as client:
        gen = client.generate("tiny", "hello", max_tokens=200, temperature=0)
        deltas = list(gen)
    assert gen.result is not None and gen.result["completion_tokens"] == 200
    # The worker sends a delta every 20 ms at most: 200 tokens come in several.
    assert len(deltas) >= 2
    assert not gen.gap
    assert "".join(deltas) == gen.result["text"]


def test_chat_streams_the_answer(procs, llm_dir):
    c = llm_cluster(procs, llm_dir)
    args = ["--coordinator", c.ws_url, "--model", "tiny", "--max-tokens", "24", "--temperature", "0",
            "--system", "be brief"]
    done = run_example("chat.py", *args, stdin="hello\n\n")
    assert done.returncode == 0, done.stderr
    # "> " prompt, the streamed answer and a newline, then the next prompt.
    assert done.stdout.startswith("> ") and done.stdout.endswith("\n> "), repr(done.stdout)
    answer = done.stdout[2:-3]
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    with legacygpu.Client(c.ws_url) as client:
        expected = client.generate("tiny", messages=messages, max_tokens=24, temperature=0).text()
    assert answer == expected


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
