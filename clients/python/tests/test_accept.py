"""``submit(accept_timeout=…)`` with the coordinator away: the caller gets
``AcceptTimeout`` in bounded time, the submission is kept under its key and
delivered later (exactly once), or withdrawn by ``cancel()``."""

from __future__ import annotations

import os
import signal
import time

import pytest
from cluster import FAST, Coordinator, free_port, freeze, until, worker

import legacygpu


def stopped_coordinator(procs) -> Coordinator:
    c = Coordinator(FAST, bind=f"127.0.0.1:{free_port()}")
    procs.append(c)
    return c


def test_the_submission_is_kept_and_delivered_once_when_the_coordinator_is_back(procs):
    c = stopped_coordinator(procs)
    with legacygpu.Client(c.ws_url, give_up_after_s=None, reconnect_max_s=0.5) as client:
        c.kill9()
        until(lambda: not client.connected, "the client noticed the kill")
        started = time.monotonic()
        with pytest.raises(legacygpu.AcceptTimeout) as e:
            client.submit("echo", {"n": 1}, idempotency_key="kept-1", accept_timeout=0.3)
        assert 0.25 < time.monotonic() - started < 3
        assert isinstance(e.value, TimeoutError) and isinstance(e.value, legacygpu.LegacyGpuError)
        kept = e.value.task
        assert isinstance(kept, legacygpu.Task) and kept.task_id == e.value.task_id == "kept-1"
        assert not kept.done() and kept.accepted == {} and kept.id == ""
        # A retry under the same key gets the same submission: nothing is sent twice.
        with pytest.raises(legacygpu.AcceptTimeout) as again:
            client.submit("echo", {"n": 1}, idempotency_key="kept-1", accept_timeout=0.1)
        c = c.restart()
        procs.append(c)
        procs.append(worker(c.ws_url, "w", "--no-gpu"))
        assert kept.result(30) == {"n": 1}
        assert again.value.task.result(30) == {"n": 1}
        assert kept.id.startswith("t-") and kept.accepted["status"] in ("queued", "assigned")
        assert again.value.task.id == kept.id
    assert legacygpu.Admin(c.http_url).tasks()["total"] == 1


def test_cancel_withdraws_a_submission_that_was_never_sent(procs):
    c = stopped_coordinator(procs)
    with legacygpu.Client(c.ws_url, give_up_after_s=None, reconnect_max_s=0.2) as client:
        c.kill9()
        until(lambda: not client.connected, "the client noticed the kill")
        with pytest.raises(legacygpu.AcceptTimeout) as e:
            client.submit("echo", {"withdrawn": True}, accept_timeout=0.2)
        e.value.task.cancel()
        with pytest.raises(legacygpu.TaskCancelled) as cancelled:
            e.value.task.result(5)
        assert cancelled.value.code == "withdrawn"
        c = c.restart()
        procs.append(c)
        procs.append(worker(c.ws_url, "w", "--no-gpu"))
        until(lambda: client.connected, "the client reconnected")
        assert client.run("echo", {"after": 1}, timeout=30) == {"after": 1}
    tasks = legacygpu.Admin(c.http_url).tasks()
    assert tasks["total"] == 1, tasks  # the withdrawn one never reached the coordinator


def test_cancel_follows_a_submission_that_may_have_been_sent(procs):
    # A frozen coordinator (SIGSTOP) keeps the connection open: the request
    # went out and is not answered. Cancelled, it is cancelled on the
    # coordinator once it runs again, under the same key.
    c = stopped_coordinator(procs)
    with legacygpu.Client(c.ws_url, give_up_after_s=None, silence_timeout_s=30) as client:
        freeze(c.proc.pid)
        try:
            with pytest.raises(legacygpu.AcceptTimeout) as e:
                client.submit("sleep", {"ms": 5000}, accept_timeout=0.3)
            e.value.task.cancel()
        finally:
            os.kill(c.proc.pid, signal.SIGCONT)
        with pytest.raises(legacygpu.TaskCancelled) as cancelled:
            e.value.task.result(30)
        assert cancelled.value.code != "withdrawn" and e.value.task.id.startswith("t-")
    admin = legacygpu.Admin(c.http_url)
    assert admin.tasks()["total"] == 1 and admin.status(e.value.task.id)["status"] == "cancelled"


def test_accept_timeout_on_the_async_client(procs):
    import asyncio

    c = stopped_coordinator(procs)

    async def go() -> None:
        async with legacygpu.AsyncClient(c.ws_url, give_up_after_s=None) as client:
            c.kill9()
            while client.connected:
                await asyncio.sleep(0.01)
            with pytest.raises(legacygpu.AcceptTimeout) as e:
                await client.submit("echo", {}, accept_timeout=0.2)
            assert isinstance(e.value.task, legacygpu.AsyncTask) and not e.value.task.done()
            await e.value.task.cancel()
            with pytest.raises(legacygpu.TaskCancelled):
                await e.value.task.result(5)

    asyncio.run(asyncio.wait_for(go(), 30))
