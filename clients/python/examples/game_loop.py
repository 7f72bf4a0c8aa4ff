#!/usr/bin/env python3
"""A game loop that offloads one physics step per frame to the cluster.

Each frame sends the scene's state as a one-step ``physics`` task and waits
for it until the frame's deadline. When the answer is late, the frame is
stepped locally instead (a crude integrator, good enough for one frame), the
late task is cancelled, and the game goes on: the cluster makes frames
better, never later.

    python3 game_loop.py --coordinator ws://127.0.0.1:8765 --frames 300
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Dict, List

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coordinator", default="ws://127.0.0.1:8765")
    parser.add_argument("--token", default=None)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--fps", type=float, default=60.0)
    parser.add_argument("--deadline-ms", type=float, default=12.0, help="how long a frame waits for the cluster")
    args = parser.parse_args()

    dt = 1.0 / args.fps
    state = initial_scene()
    remote = local = 0
    round_trips: List[float] = []
    with legacygpu.Client(args.coordinator, token=args.token) as client:
        next_frame = time.monotonic()
        for _ in range(args.frames):
            sent = time.monotonic()
            task = client.submit("physics", remote_input(state, dt), priority="HIGH", timeout_s=1.0, max_attempts=1)
            try:
                result = task.result(timeout=max(0.0, args.deadline_ms / 1000 - (time.monotonic() - sent)))
                state = [{k: body[k] for k in ("id", "position", "rotation", "linear_velocity", "angular_velocity")}
                         for body in result["bodies"]]
                round_trips.append((time.monotonic() - sent) * 1000)
                remote += 1
            except (TimeoutError, legacygpu.TaskError):
                task.cancel()  # too late for this frame: nobody needs it any more
                state = local_step(state, dt)
                local += 1
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
