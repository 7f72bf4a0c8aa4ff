"""One task at a time, side by side: legacygpu against the seed's naive design.

Starts each coordinator in turn on loopback — the naive Python one from
naive_coordinator.py and `legacygpu cluster start` in several store modes —
with the same two Python peers (load.py peers: seed messages only, or, in
the row that says so, answering with cluster ids as our worker does) and the
same Python gamer (load.py gamer: one task in flight, seed messages only), alternating the
coordinators round after round. Reports the median over rounds of tasks/s,
p50, p99 and the coordinator's CPU time per task (from /proc/PID/stat).

    python3 scripts/seedbench/run.py --binary target/release/legacygpu --rounds 3

Given --binary more than once (an A/B of two builds), each legacygpu row is
run with every binary in turn, round after round, and labelled with it.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its threads, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def wait_for_port(port: int, deadline_s: float = 20.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port} after {deadline_s} s")


def coordinators(binary: str) -> dict:
    """Name -> (function(port, data_dir) -> argv, extra arguments of the peers)."""
    def legacygpu(*extra):
        return lambda port, data: [binary, "cluster", "start", "--bind", f"127.0.0.1:{port}", "--no-http",
                                   *(["--data-dir", data] if "--no-store" not in extra else []), *extra]
    seed_peers, echoing_peers = [], ["--echo-ids"]
    return {
        "naive Python design from the seed (no durability)":
            (lambda port, data: [sys.executable, os.path.join(HERE, "naive_coordinator.py"), "--port", str(port)],
             seed_peers),
        "legacygpu, default store": (legacygpu(), seed_peers),
        "legacygpu, default store, peers echoing ids": (legacygpu(), echoing_peers),
        "legacygpu `--sync full`": (legacygpu("--sync", "full"), seed_peers),
        "legacygpu `--sync normal`": (legacygpu("--sync", "normal"), seed_peers),
        "legacygpu `--no-store`": (legacygpu("--no-store"), seed_peers),
    }


def one_round(argv, peer_args, tasks: int, warmup: int) -> dict:
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        coord = subprocess.Popen(argv(port, data), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(port)
            url = f"ws://127.0.0.1:{port}"
            load = os.path.join(HERE, "load.py")
            peers = subprocess.Popen([sys.executable, load, "peers", "--url", url, "--count", "2", *peer_args])
            try:
                time.sleep(0.5)  # the peers register
                before = cpu_seconds(coord.pid)
                out = subprocess.run([sys.executable, load, "gamer", "--url", url, "--tasks", str(tasks),
                                      "--warmup", str(warmup)], check=True, capture_output=True, text=True,
                                     timeout=600)
                used = cpu_seconds(coord.pid) - before
            finally:
                peers.kill()
                peers.wait()
        finally:
            coord.kill()
            coord.wait()
    figures = json.loads(out.stdout)
    figures["cpu_us_per_task"] = used / (figures["tasks"] + warmup) * 1e6
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", action="append",
                        help="the legacygpu binary (default target/release/legacygpu); repeat to compare builds")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--only", action="append", help="substring of the coordinators to run")
    args = parser.parse_args()
    binaries = args.binary or ["target/release/legacygpu"]
    tables = [coordinators(binary) for binary in binaries]
    argvs = {}
    for name in tables[0]:
        for binary, table in zip(binaries, tables):
            label = f"{name} [{binary}]" if len(binaries) > 1 and name.startswith("legacygpu") else name
            argvs.setdefault(label, table[name])
    runs = {name: [] for name in argvs}
    if args.only:
        runs = {n: v for n, v in runs.items() if any(o in n for o in args.only)}
    for r in range(args.rounds):
        for name in runs:
            argv, peer_args = argvs[name]
            figures = one_round(argv, peer_args, args.tasks, args.warmup)
            runs[name].append(figures)
            print(f"round {r + 1} {name}: {json.dumps(figures)}", file=sys.stderr, flush=True)
    print("| coordinator | tasks/s | p50 | p99 | coordinator CPU per task |")
    print("|---|---|---|---|---|")
    for name, rs in runs.items():
        med = lambda k: statistics.median(x[k] for x in rs)
        print(f"| {name} | {med('tasks_per_s'):,.0f} | {med('p50_ms'):.2f} ms | {med('p99_ms'):.2f} ms "
              f"| {med('cpu_us_per_task'):.0f} µs |")


if __name__ == "__main__":
    main()
