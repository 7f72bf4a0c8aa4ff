"""A naive coordinator written from the seed alone (seed 000, phases 1-3).

The comparison point for legacygpu's one-task-at-a-time latency: what a
developer gets from the seed's own design in Python — a websockets server on
one asyncio loop, a FIFO queue, tasks handed to idle peers, results forwarded
to the gamer that asked, heartbeats checked every 10 s. It keeps nothing on
disk (no durability), which is the point of comparison.

    python3 naive_coordinator.py --port 8765
"""

import argparse
import asyncio
import collections
import json
import time

import websockets


class Coordinator:
    def __init__(self) -> None:
        self.peers = {}  # peer_id -> {"ws", "busy": task_id | None, "seen": float}
        self.gamers = {}  # gamer_id -> ws
        self.queue = collections.deque()  # (task_id, gamer_id, task_type, data)
        self.running = {}  # task_id -> (gamer_id, task_type, data, peer_id)

    async def handler(self, ws) -> None:
        me = None
        try:
            async for raw in ws:
                msg = json.loads(raw)
                kind = msg.get("msg_type")
                if kind == "register_peer":
                    me = ("peer", msg["peer_id"])
                    self.peers[msg["peer_id"]] = {"ws": ws, "busy": None, "seen": time.monotonic()}
                    await ws.send(json.dumps({"msg_type": "registration_ack", "status": "registered"}))
                    await self.assign()
                elif kind == "register_gamer":
                    me = ("gamer", msg["gamer_id"])
                    self.gamers[msg["gamer_id"]] = ws
                    await ws.send(json.dumps({"msg_type": "registration_ack", "status": "registered"}))
                elif kind == "heartbeat":
                    if msg.get("peer_id") in self.peers:
                        self.peers[msg["peer_id"]]["seen"] = time.monotonic()
                elif kind == "task_request" and me and me[0] == "gamer":
                    self.queue.append((msg["task_id"], me[1], msg.get("task_type"), msg.get("data")))
                    await self.assign()
                elif kind == "task_result" and me and me[0] == "peer":
                    task = self.running.pop(msg["task_id"], None)
                    self.peers[me[1]]["busy"] = None
                    if task:
                        gamer = self.gamers.get(task[0])
                        if gamer is not None:
                            out = {"msg_type": "task_result", "task_id": msg["task_id"], "result": msg.get("result")}
                            await gamer.send(json.dumps(out))
                    await self.assign()
        finally:
            if me and me[0] == "peer":
                self.lost(me[1])
            elif me and me[0] == "gamer":
                self.gamers.pop(me[1], None)

    async def assign(self) -> None:
        for peer_id, peer in self.peers.items():
            if not self.queue:
                return
            if peer["busy"] is None:
                task_id, gamer_id, task_type, data = self.queue.popleft()
                peer["busy"] = task_id
                self.running[task_id] = (gamer_id, task_type, data, peer_id)
                out = {"msg_type": "task_assignment", "task_id": task_id, "task_data": data}
                await peer["ws"].send(json.dumps(out))

    def lost(self, peer_id: str) -> None:
        peer = self.peers.pop(peer_id, None)
        if peer and peer["busy"] in self.running:
            gamer_id, task_type, data, _ = self.running.pop(peer["busy"])
            self.queue.appendleft((peer["busy"], gamer_id, task_type, data))

    async def monitor(self) -> None:
        while True:
            await asyncio.sleep(10)
            now = time.monotonic()
            for peer_id in [p for p, v in self.peers.items() if now - v["seen"] > 15]:
                self.lost(peer_id)
            await self.assign()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    coordinator = Coordinator()
    async with websockets.serve(coordinator.handler, args.host, args.port, max_size=16 * 2**20):
        print(f"naive coordinator on ws://{args.host}:{args.port}", flush=True)
        await coordinator.monitor()


if __name__ == "__main__":
    asyncio.run(main())
