"""generate(): deltas as they stream, the final text authoritative.

Against a scripted coordinator, which can drop, reorder and cut deltas on
purpose. Streaming through the real coordinator from an LLM worker is tested
in test_examples.py (test_generate_streams_through_the_cluster, and the chat
example)."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from scripted import Scripted, progress, result

import legacygpu


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def script(*frames):
    async def on_request(ws, msg):
        for f in frames:
            await ws.send(f(msg["task_id"]) if callable(f) else f)

    return on_request


def test_deltas_stream_and_add_up_to_the_text():
    async def go():
        frames = [lambda t, i=i, s=s: progress(t, i, s) for i, s in enumerate(["Hel", "lo", " wor", "ld"])]
        async with Scripted(script(*frames, lambda t: result(t, "Hello world"))) as server:
            async with legacygpu.AsyncClient(server.url) as client:
                gen = client.generate("tiny-llm", messages=[{"role": "user", "content": "hi"}], max_tokens=8,
                                      temperature=0.0, stop=["\n"], seed=1)
                deltas = [d async for d in gen]
        assert deltas == ["Hel", "lo", " wor", "ld"]
        assert (gen.gap, gen.result["finish_reason"], gen.task.id) == (False, "stop", "t-1")
        req = server.requests[0]
        assert (req["task_type"], req["stream"]) == ("generate", True)
        assert req["data"] == {"model": "tiny-llm", "messages": [{"role": "user", "content": "hi"}],
                               "max_tokens": 8, "temperature": 0.0, "seed": 1, "stop": ["\n"]}

    run(go())


def test_a_gap_in_seq_yields_the_missing_tail_from_the_final_text():
    async def go():
        frames = [lambda t: progress(t, 0, "Hel"), lambda t: progress(t, 2, " wor"),  # seq 1 was dropped
                  lambda t: progress(t, 3, "ld"), lambda t: result(t, "Hello world")]
        async with Scripted(script(*frames)) as server:
            async with legacygpu.AsyncClient(server.url) as client:
                gen = client.generate("tiny-llm", "Say hello")
                deltas = [d async for d in gen]
        assert deltas == ["Hel", "lo world"]
        assert gen.gap and "".join(deltas) == gen.result["text"]

    run(go())


def test_no_progress_at_all_yields_the_whole_text():
    async def go():
        async with Scripted(script(lambda t: result(t, "All at once"))) as server:
            async with legacygpu.AsyncClient(server.url) as client:
                assert await client.generate("tiny-llm", "x").text() == "All at once"

    run(go())


def test_an_interrupted_stream_raises_after_its_deltas():
    def interrupted(t):
        return json.dumps({"msg_type": "task_error", "task_id": t, "id": "t-1", "status": "failed",
                           "code": "stream_interrupted", "reason": "peer lost after streaming", "attempts": 1})

    async def go():
        async with Scripted(script(lambda t: progress(t, 0, "Hel"), interrupted)) as server:
            async with legacygpu.AsyncClient(server.url) as client:
                seen = []
                with pytest.raises(legacygpu.TaskFailed) as e:
                    async for d in client.generate("tiny-llm", "x"):
                        seen.append(d)
        assert seen == ["Hel"] and e.value.code == "stream_interrupted"

    run(go())


def test_progress_for_unstreamed_tasks_is_ignored():
    async def go():
        frames = [lambda t: progress(t, 0, "noise"),
                  lambda t: json.dumps({"msg_type": "task_result", "task_id": t, "result": 7})]
        async with Scripted(script(*frames)) as server:
            async with legacygpu.AsyncClient(server.url) as client:
                assert await client.run("echo", 7) == 7
                assert "stream" not in server.requests[0]

    run(go())


def test_the_blocking_client_streams_too():
    ready = threading.Event()
    stop = None
    holder = {}

    async def serve():
        nonlocal stop
        frames = [lambda t: progress(t, 0, "a"), lambda t: progress(t, 1, "b"), lambda t: result(t, "abc")]
        async with Scripted(script(*frames)) as server:
            holder["url"] = server.url
            stop = asyncio.Event()
            ready.set()
            await stop.wait()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        with legacygpu.Client(holder["url"]) as client:
            gen = client.generate("tiny-llm", "x")
            assert list(gen) == ["a", "b", "c"]
            assert gen.result["text"] == "abc"
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
