#!/usr/bin/env python3
"""A game loop that offloads one physics step per frame to the cluster.

Each frame sends the scene's state as a one-step ``physics`` task and waits
for it until the frame's deadline — the submission's acceptance and the
result together. When the answer is late, or the cluster fails the frame in
any way (the coordinator is down, the queue is full, the task failed), the
frame is stepped locally instead (a crude integrator, good enough for one
frame), the late task is withdrawn, and the game goes on: the cluster makes
frames better, never later. The client reconnects in the background, so
frames go back to the cluster when it is back.

    python3 game_loop.py --coordinator ws://127.0.0.1:8765 --frames 300
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Dict, List, Optional, Tuple

import legacygpu
from legacygpu import inputs

GRAVITY = -9.81
RADIUS = 0.5


def initial_scene() -> List[Dict[str, Any]]:
    return [
        {"id": f"ball-{i}", "position": [i * 1.5, 3.0 + i, 0.0], "rotation": [0.0, 0.0, 0.0, 1.0],
         "linear_velocity": [0.5, 0.0, 0.0], "angular_velocity": [0.0, 0.0, 0.0]}
        for i in range(4)
    ]


def remote_input(state: List[Dict[str, Any]], dt: float) -> Dict[str, Any]:
    bodies = [inputs.sphere(b["id"], RADIUS, position=b["position"], rotation=b["rotation"],
                            linear_velocity=b["linear_velocity"], angular_velocity=b["angular_velocity"],
                            density=1.0, restitution=0.4)
              for b in state]
    return inputs.physics(bodies, steps=1, dt=dt, ground={"y": 0.0, "restitution": 0.4})


def local_step(state: List[Dict[str, Any]], dt: float) -> List[Dict[str, Any]]:
    """The fallback: explicit Euler with a bouncy floor."""
    out = []
    for b in state:
        (x, y, z), (vx, vy, vz) = b["position"], b["linear_velocity"]
        vy += GRAVITY * dt
        x, y, z = x + vx * dt, y + vy * dt, z + vz * dt
        if y < RADIUS:
            y, vy = RADIUS, -vy * 0.4
        out.append({**b, "position": [x, y, z], "linear_velocity": [vx, vy, vz]})
    return out


State = List[Dict[str, Any]]


def withdraw(task: legacygpu.Task) -> None:
    """Nobody needs a late frame any more: cancel it (a submission never
    sent is dropped at once)."""
    try:
        task.cancel()
    except legacygpu.LegacyGpuError:
        pass  # the client is closed or gave up: nothing runs for us any more


def remote_step(client: legacygpu.Client, state: State, dt: float, deadline: float) -> Tuple[Optional[State], str]:
    """The next state from the cluster, or None (and why) when it is not back
    by ``deadline`` (a ``time.monotonic()`` instant)."""
    left = deadline - time.monotonic()
    if left <= 0:
        return None, "no time left"
    try:
        task = client.submit("physics", remote_input(state, dt), priority="HIGH", timeout_s=1.0, max_attempts=1,
                             accept_timeout=left)
    except legacygpu.AcceptTimeout as e:
        withdraw(e.task)  # not even accepted in time: the coordinator is away
        return None, "not accepted in time"
    except legacygpu.LegacyGpuError as e:  # Busy, Rejected, ConnectionLost, ClientClosed…
        return None, type(e).__name__
    try:
        result = task.result(timeout=max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        withdraw(task)  # too late for this frame
        return None, "late"
    except legacygpu.LegacyGpuError as e:  # TaskFailed, TaskTimedOut, ConnectionLost…
        return None, type(e).__name__
    keys = ("id", "position", "rotation", "linear_velocity", "angular_velocity")
    return [{k: body[k] for k in keys} for body in result["bodies"]], "remote"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coordinator", default="ws://127.0.0.1:8765")
    parser.add_argument("--token", default=None)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--fps", type=float, default=60.0)
    parser.add_argument("--deadline-ms", type=float, default=12.0, help="how long a frame waits for the cluster")
    parser.add_argument("--verbose", action="store_true", help="print a line per frame")
    args = parser.parse_args()

    dt = 1.0 / args.fps
    state = initial_scene()
    remote = local = 0
    round_trips: List[float] = []
    # give_up_after_s=None: keep reconnecting for as long as the game runs
    # (every frame has its own deadline, so nothing waits on it).
    with legacygpu.Client(args.coordinator, token=args.token, give_up_after_s=None) as client:
        next_frame = time.monotonic()
        for frame in range(args.frames):
            sent = time.monotonic()
            stepped, why = remote_step(client, state, dt, sent + args.deadline_ms / 1000)
            took_ms = (time.monotonic() - sent) * 1000
            if stepped is not None:
                state = stepped
                round_trips.append(took_ms)
                remote += 1
            else:
                state = local_step(state, dt)
                local += 1
            if args.verbose:
                print(f"frame {frame}: {'remote' if stepped is not None else 'local'} ({why}, {took_ms:.1f} ms)",
                      flush=True)
            # ... draw the frame here ...
            next_frame += dt
            time.sleep(max(0.0, next_frame - time.monotonic()))

    p50 = f"{statistics.median(round_trips):.1f} ms" if round_trips else "-"
    print(f"frames: {args.frames}  remote: {remote}  local fallback: {local}  remote round trip p50: {p50}")
    for b in state:
        x, y, z = b["position"]
        print(f"{b['id']}: position ({x:.2f}, {y:.2f}, {z:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
