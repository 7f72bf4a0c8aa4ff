#!/usr/bin/env python3
"""Throughput and latency of the Python client against a running coordinator.

    legacygpu cluster start --bind 127.0.0.1:18765 --http 127.0.0.1:18000 --data-dir /tmp/pybench &
    legacygpu worker start --coordinator ws://127.0.0.1:18765 --slots 256 --task-types echo &
    python3 clients/python/benchmarks/bench_client.py --coordinator ws://127.0.0.1:18765

Three modes, each bounded by --tasks and --duration (whichever ends first):

- ``sync``: the blocking Client, one task in flight (``client.run``);
- ``pipelined``: one AsyncClient connection, --in-flight coroutines each
  doing ``await client.run(...)`` in a loop (submit, acknowledgement, result);
- ``submit_many``: ``Client.submit_many`` of --tasks tasks, then every result.

Latency is from the call to the result, per task. Tasks are ``echo`` of a
small object: the cluster's overhead, not an executor's work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Dict, List

import legacygpu


def summary(mode: str, latencies_s: List[float], elapsed_s: float, in_flight: int, cpu_s: float) -> Dict[str, object]:
    ms = sorted(x * 1000 for x in latencies_s)

    def pct(p: float) -> float:
        return ms[min(len(ms) - 1, int(p / 100 * len(ms)))] if ms else float("nan")

    return {"mode": mode, "in_flight": in_flight, "tasks": len(ms), "seconds": round(elapsed_s, 2),
            "tasks_per_s": round(len(ms) / elapsed_s) if elapsed_s else 0,
            "p50_ms": round(pct(50), 3), "p99_ms": round(pct(99), 3), "max_ms": round(ms[-1], 3) if ms else None,
            "mean_ms": round(statistics.fmean(ms), 3) if ms else None,
            # CPU this process (the client, all its threads) spent per task.
            "client_cpu_ms_per_task": round(cpu_s * 1000 / len(ms), 3) if ms else None}


def bench_sync(url: str, tasks: int, duration: float) -> Dict[str, object]:
    with legacygpu.Client(url) as client:
        for i in range(200):  # warm-up
            client.run("echo", {"i": i})
        lat: List[float] = []
        cpu = time.process_time()
        start = time.perf_counter()
        end = start + duration
        for i in range(tasks):
            t0 = time.perf_counter()
            client.run("echo", {"i": i})
            t1 = time.perf_counter()
            lat.append(t1 - t0)
            if t1 > end:
                break
        return summary("sync", lat, time.perf_counter() - start, 1, time.process_time() - cpu)


async def bench_pipelined(url: str, tasks: int, duration: float, in_flight: int) -> Dict[str, object]:
    async with legacygpu.AsyncClient(url) as client:
        await asyncio.gather(*[client.run("echo", {"w": i}) for i in range(min(in_flight, 500))])  # warm-up
        lat: List[float] = []
        left = [tasks]
        cpu = time.process_time()
        start = time.perf_counter()
        end = start + duration

        async def user() -> None:
            while left[0] > 0 and time.perf_counter() < end:
                left[0] -= 1
                t0 = time.perf_counter()
                await client.run("echo", {"n": left[0]})
                lat.append(time.perf_counter() - t0)

        await asyncio.gather(*[user() for _ in range(in_flight)])
        return summary("pipelined", lat, time.perf_counter() - start, in_flight, time.process_time() - cpu)


def bench_submit_many(url: str, tasks: int, in_flight: int) -> Dict[str, object]:
    with legacygpu.Client(url) as client:
        start = time.perf_counter()
        handles = client.submit_many("echo", [{"i": i} for i in range(tasks)], in_flight=in_flight)
        for h in handles:
            h.result(60)
        elapsed = time.perf_counter() - start
    return {"mode": "submit_many", "in_flight": in_flight, "tasks": tasks, "seconds": round(elapsed, 2),
            "tasks_per_s": round(tasks / elapsed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coordinator", required=True)
    parser.add_argument("--mode", choices=["sync", "pipelined", "submit_many", "all"], default="all")
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--in-flight", type=int, default=256)
    args = parser.parse_args()
    modes = ["sync", "pipelined", "submit_many"] if args.mode == "all" else [args.mode]
    for mode in modes:
        if mode == "sync":
            report = bench_sync(args.coordinator, args.tasks, args.duration)
        elif mode == "pipelined":
            report = asyncio.run(bench_pipelined(args.coordinator, args.tasks, args.duration, args.in_flight))
        else:
            report = bench_submit_many(args.coordinator, args.tasks, args.in_flight)
        print(json.dumps(report))


if __name__ == "__main__":
    main()
