"""Several coordinator URLs: the client skips one it cannot reach and follows
a standby's ``not_leader`` to the leader (docs/SCALING.md). The standby here
is a websockets server answering as a real standby does (docs/PROTOCOL.md):
the real one needs PostgreSQL, which the Rust tests (crates/cli/tests/it/ha.rs)
cover."""

from __future__ import annotations

import asyncio
import json
from typing import List

from websockets.asyncio.server import ServerConnection, serve

import legacygpu
from cluster import free_port


def test_the_leader_is_found_past_a_dead_url_and_a_standby(cluster):
    async def go():
        asked: List[str] = []

        async def standby(ws: ServerConnection) -> None:
            first = json.loads(await ws.recv())
            asked.append(first["msg_type"])
            await ws.send(json.dumps({"msg_type": "error", "code": "not_leader", "in_reply_to": first["msg_type"],
                                      "reason": "standby", "leader": cluster.ws_url, "retry_after_s": 0.25}))
            await ws.close(4003, "not leader")

        async with serve(standby, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            dead = f"ws://127.0.0.1:{free_port()}"
            urls = f"{dead},ws://127.0.0.1:{port}"
            async with legacygpu.AsyncClient(urls, connect_timeout_s=5) as client:
                assert await client.run("echo", {"via": "leader"}) == {"via": "leader"}
            assert asked == ["register_gamer"]

    asyncio.run(asyncio.wait_for(go(), 60))


def test_a_list_of_urls_is_checked():
    for bad in ["ws://a:1,", "ws://a:1,http://b:2", ","]:
        try:
            legacygpu.AsyncClient(bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad!r}")
