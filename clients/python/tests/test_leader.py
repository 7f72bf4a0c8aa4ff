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


def test_a_coordinator_that_just_failed_is_not_followed_back_from_a_standby():
    """A frozen leader keeps its lease for a while, so the standbys still
    name it: the client asks them again instead of waiting on it (as
    proto::Endpoints does in Rust), and follows names again once connected."""
    from legacygpu._driver import Driver, Options
    from legacygpu.tls import Tls

    async def go():
        urls = "ws://a:1,ws://b:2,ws://c:3"
        options = Options(gamer_id="g", token=None, reconnect=True, resubmit_acknowledged=True,
                          reconnect_max_s=1, connect_timeout_s=1, give_up_after_s=None, max_frame_bytes=1 << 20,
                          silence_timeout_s=3)
        d = Driver(urls, options, Tls(None, None, None, urls=urls.split(",")))
        d._connected()  # a leads, then freezes
        d._failed()
        assert d.url == "ws://b:2"
        d._not_leader("ws://a:1")  # b's view of the lease is stale
        assert d.url == "ws://c:3"
        d._not_leader("ws://c:3")  # c names itself: stale too
        assert d.url == "ws://b:2"  # a is skipped while b and c have not failed
        d._not_leader("ws://c:3")  # b names the new leader
        assert d.url == "ws://c:3"
        d._connected()
        d._failed()  # c fails in turn; a may be named again
        d._not_leader("ws://b:2")
        d._not_leader("ws://a:1")
        assert d.url == "ws://a:1"

    asyncio.run(go())


def test_the_silence_timeout_is_short_given_several_coordinators_and_long_given_one():
    """Given several URLs a frozen leader is left about when a standby takes
    its lease (3 s); given one there is nowhere to go, so it is waited for."""
    assert legacygpu.AsyncClient("ws://a:1,ws://b:2")._options.silence_timeout_s == 3.0
    assert legacygpu.AsyncClient("ws://a:1")._options.silence_timeout_s == 15.0
    assert legacygpu.AsyncClient("ws://a:1,ws://a:1")._options.silence_timeout_s == 15.0
    assert legacygpu.AsyncClient("ws://a:1,ws://b:2", silence_timeout_s=7)._options.silence_timeout_s == 7.0
