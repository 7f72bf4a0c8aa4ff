"""Seed-protocol load: peers that answer at once, and a gamer with one task in flight.

Speaks only the seed's messages (register_peer, heartbeat, task_result,
register_gamer, task_request), so the same clients load legacygpu and the
naive seed coordinator alike. Used by run.py; on its own:

    python3 load.py peers --url ws://127.0.0.1:8765 --count 2
    python3 load.py gamer --url ws://127.0.0.1:8765 --tasks 5000
"""

import argparse
import asyncio
import json
import sys
import time

import websockets


async def peer(url: str, name: str, echo_ids: bool) -> None:
    # With echo_ids the peer answers as our worker does (the assignment's
    # cluster id and attempt, declared in capabilities.echoes_ids); without,
    # with the seed's messages only.
    caps = {"echoes_ids": True} if echo_ids else {}
    async with websockets.connect(url, max_size=16 * 2**20) as ws:
        await ws.send(json.dumps({"msg_type": "register_peer", "peer_id": name, "capabilities": caps}))
        last_beat = time.monotonic()
        async for raw in ws:
            msg = json.loads(raw)
            if msg.get("msg_type") == "task_assignment":
                out = {"msg_type": "task_result", "task_id": msg["task_id"], "result": msg.get("task_data")}
                if echo_ids:
                    out.update(id=msg["id"], attempt=msg["attempt"])
                await ws.send(json.dumps(out))
            if time.monotonic() - last_beat > 5:
                await ws.send(json.dumps({"msg_type": "heartbeat", "peer_id": name}))
                last_beat = time.monotonic()


async def peers(url: str, count: int, echo_ids: bool) -> None:
    await asyncio.gather(*(peer(url, f"bench-peer-{i}", echo_ids) for i in range(count)))


async def gamer(url: str, tasks: int, warmup: int, seconds: float) -> dict:
    """Sends one task, waits for its result, sends the next; returns the figures."""
    async with websockets.connect(url, max_size=16 * 2**20) as ws:
        await ws.send(json.dumps({"msg_type": "register_gamer", "gamer_id": "bench-gamer"}))
        while json.loads(await ws.recv()).get("msg_type") != "registration_ack":
            pass
        latencies = []
        deadline = time.monotonic() + seconds
        started = None
        for i in range(warmup + tasks):
            if i == warmup:
                started = time.monotonic()
            task_id = str(i)
            t0 = time.perf_counter()
            req = {"msg_type": "task_request", "task_id": task_id, "task_type": "echo", "data": {"i": i}}
            await ws.send(json.dumps(req))
            while True:
                msg = json.loads(await ws.recv())
                if msg.get("msg_type") in ("task_result", "task_error") and msg.get("task_id") == task_id:
                    break
            if msg.get("msg_type") != "task_result" or msg.get("result") != {"i": i}:
                raise SystemExit(f"task {task_id}: unexpected answer {msg}")
            if i >= warmup:
                latencies.append(time.perf_counter() - t0)
            if time.monotonic() > deadline:
                break
        wall = time.monotonic() - started
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3
    return {"tasks": len(latencies), "seconds": wall, "tasks_per_s": len(latencies) / wall,
            "p50_ms": pick(0.50), "p99_ms": pick(0.99)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["peers", "gamer"])
    parser.add_argument("--url", default="ws://127.0.0.1:8765")
    parser.add_argument("--count", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--echo-ids", action="store_true", help="peers answer with cluster id and attempt")
    args = parser.parse_args()
    if args.mode == "peers":
        asyncio.run(peers(args.url, args.count, args.echo_ids))
    else:
        figures = asyncio.run(gamer(args.url, args.tasks, args.warmup, args.seconds))
        json.dump(figures, sys.stdout)
        print()


if __name__ == "__main__":
    main()
