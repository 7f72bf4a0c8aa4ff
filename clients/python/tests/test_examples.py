"""The examples run against a real cluster (chat.py with a worker serving the
tiny random-weight GGUF, streamed through the coordinator)."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List, Tuple

from cluster import FAST, Coordinator, until, worker
from images import png

import legacygpu

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def example_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(EXAMPLES.parent / "src"), env.get("PYTHONPATH", "")])
    return env


def run_example(name: str, *args: str, stdin: "str | None" = None) -> subprocess.CompletedProcess:
    env = example_env()
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


def test_game_loop_steps_locally_when_the_coordinator_is_killed(procs):
    # The coordinator is killed (kill -9) while frames are offloaded: every
    # later frame waits for the cluster no longer than its deadline, then is
    # stepped locally; the loop never hangs on the lost connection.
    c = Coordinator(FAST)
    procs.append(c)
    procs.append(worker(c.ws_url, "w", "--no-gpu", "--slots", "2"))
    admin = legacygpu.Admin(c.http_url)
    until(lambda: admin.workers()["total"] >= 1, "the worker registered")
    deadline_s, frames = 0.05, 90
    args = ["--coordinator", c.ws_url, "--frames", str(frames), "--fps", "60", "--deadline-ms",
            str(deadline_s * 1000), "--verbose"]
    game = subprocess.Popen([sys.executable, "-u", str(EXAMPLES / "game_loop.py"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=example_env())
    lines: "queue.Queue[Tuple[float, str]]" = queue.Queue()

    def read() -> None:
        assert game.stdout is not None
        for line in game.stdout:
            lines.put((time.monotonic(), line.rstrip("\n")))

    threading.Thread(target=read, daemon=True).start()
    try:
        remote = 0
        while remote < 5:
            _, line = lines.get(timeout=30)
            assert line.startswith("frame "), f"the loop ended before 5 frames were offloaded: {line}"
            remote += ": remote" in line
        c.kill9()
        killed = time.monotonic()
        after: List[Tuple[float, str]] = []
        while True:
            at, line = lines.get(timeout=30)
            if not line.startswith("frame "):
                summary = line
                break
            after.append((at, line))
        assert game.wait(timeout=30) == 0, game.stderr.read() if game.stderr else ""
    finally:
        if game.poll() is None:
            game.kill()
            game.wait()
    # The frame in flight at the kill may still have come back; every frame
    # begun after it is stepped locally, none waiting past its deadline.
    settled = [(at, line) for at, line in after if at > killed + deadline_s + 0.5]
    assert len(settled) >= 20, after
    assert all(": local" in line for _, line in settled), settled
    gaps = [b - a for (a, _), (b, _) in zip([(killed, "")] + after, after)]
    assert max(gaps) < deadline_s + 1.5, f"a frame took {max(gaps):.2f} s after the kill: {after}"
    found = counts(summary)
    assert found["frames"] == frames and found["remote"] >= 5 and found["local fallback"] >= len(settled), summary


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


def test_classify_folder_streams_a_small_window_and_reports_bad_files(procs, models_dir, tmp_path):
    c = Coordinator(FAST)
    procs.append(c)
    procs.append(worker(c.ws_url, "w", "--models-dir", str(models_dir), "--no-gpu", "--slots", "2"))
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(7):
        (folder / f"{i:02d}-red.png").write_bytes(png(20 + i, 20, (230, 10, 10)))
    (folder / "03-broken.png").write_text("not really a PNG")
    done = run_example("classify_folder.py", "--coordinator", c.ws_url, "--model", "tiny", "--in-flight", "2",
                       str(folder))
    assert done.returncode == 1, done.stderr
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)
    assert lines["03-broken.png"].startswith("error:") and "neither a PNG nor a JPEG" in lines["03-broken.png"]
    assert [f for f, label in lines.items() if label.startswith("red")] == [f"{i:02d}-red.png" for i in range(7)]
    assert "8 images, 1 failed" in done.stdout and "8/8" in done.stderr
