"""The AsyncClient against the real binary: the same methods as coroutines."""

from __future__ import annotations

import asyncio

import pytest

import legacygpu


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_submit_await_status_cancel(cluster):
    async def go():
        async with legacygpu.AsyncClient(cluster.ws_url) as client:
            task = await client.submit("echo", {"a": 1}, priority=3, max_attempts=1)
            assert await task == {"a": 1}
            assert await task.result(timeout=5) == {"a": 1}
            assert (await task.status())["status"] == "completed"
            assert task.id.startswith("t-") and task.done()
            slow = await client.submit("sleep", {"ms": 20_000})
            assert (await slow.status())["status"] in ("assigned", "running")
            await slow.cancel()
            with pytest.raises(legacygpu.TaskCancelled):
                await slow
            with pytest.raises(TimeoutError):
                await (await client.submit("sleep", {"ms": 500})).result(timeout=0.05)
            assert await client.run("echo", "x") == "x"

    run(go())


def test_many_in_flight_as_completed_and_map(cluster):
    async def go():
        async with legacygpu.AsyncClient(cluster.ws_url) as client:
            # Many tasks in flight on one connection, submitted concurrently.
            tasks = await asyncio.gather(*[client.submit("echo", {"i": i}) for i in range(200)])
            assert await asyncio.gather(*tasks) == [{"i": i} for i in range(200)]
            many = await client.submit_many("echo", [{"j": j} for j in range(500)], in_flight=100)
            seen = [t.task_id async for t in client.as_completed(many, timeout=30)]
            assert sorted(seen) == sorted(t.task_id for t in many)
            assert [await t for t in many] == [{"j": j} for j in range(500)]
            got = [r async for r in client.map("echo", [{"k": k} for k in range(40)], in_flight=7)]
            assert got == [{"k": k} for k in range(40)]
            assert client.stats["duplicates"] == 0

    run(go())


def test_closing_the_client_resolves_what_waits(cluster):
    async def go():
        client = await legacygpu.AsyncClient(cluster.ws_url).connect()
        slow = await client.submit("sleep", {"ms": 20_000})
        await client.close()
        with pytest.raises(legacygpu.ClientClosed):
            await slow
        with pytest.raises(legacygpu.ClientClosed):
            await client.submit("echo", {})

    run(go())
