"""Failures with real processes: coordinator kill -9 and restart with 1 000
tasks in flight, a worker killed mid-task, a restart without a store, a full
queue, a wrong token, a coordinator gone for good."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

import pytest
from cluster import FAST, Coordinator, free_port, until, worker

import legacygpu

TASKS = 1000


def sleep_ms(i: int) -> int:
    # 1 000 tasks of 20–80 ms on 32 slots: about 1.6 s of work, so that
    # many are still running or queued at each kill.
    return 20 + (i % 7) * 10


async def wait_for(check, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("resubmit_acknowledged", [False, True], ids=["awaiting", "resubmit-all"])
def test_kill_9_of_the_coordinator_with_1000_tasks_in_flight(procs, resubmit_acknowledged):
    flags = ["--heartbeat-timeout", "2", "--heartbeat-interval", "0.3", "--max-attempts", "20"]
    coordinator = Coordinator(flags, bind=f"127.0.0.1:{free_port()}")
    procs.append(coordinator)
    workers = [worker(coordinator.ws_url, f"w{n}", "--slots", "16", "--no-gpu") for n in (1, 2)]
    procs.extend(workers)

    async def go() -> None:
        nonlocal coordinator
        client = legacygpu.AsyncClient(coordinator.ws_url, gamer_id="crash-checker",
                                       resubmit_acknowledged=resubmit_acknowledged, give_up_after_s=120)
        async with client:
            submitting = asyncio.ensure_future(
                client.submit_many("sleep", [{"ms": sleep_ms(i)} for i in range(TASKS)], in_flight=TASKS))
            loop = asyncio.get_running_loop()
            # Chaos driven by progress: a coordinator kill while submissions
            # are still being acknowledged, a worker kill, and a second
            # coordinator kill with half the outcomes still to come.
            await wait_for(lambda: client.stats["accepted"] >= 300, "300 tasks acknowledged")
            coordinator.kill9()
            coordinator = await loop.run_in_executor(None, coordinator.restart)
            procs.append(coordinator)
            await wait_for(lambda: client.stats["accepted"] >= 600, "600 tasks acknowledged")
            workers[0].kill9()
            procs.append(worker(coordinator.ws_url, "w1", "--slots", "16", "--no-gpu"))
            await wait_for(lambda: client.stats["outcomes"] >= TASKS // 2, "half the outcomes")
            unfinished = TASKS - client.stats["outcomes"]
            coordinator.kill9()
            coordinator = await loop.run_in_executor(None, coordinator.restart)
            procs.append(coordinator)
            tasks = await asyncio.wait_for(submitting, 90)
            outcomes = await asyncio.wait_for(asyncio.gather(*[t.result() for t in tasks]), 90)
            await wait_for(lambda: client.stats["reconnects"] >= 2, "two reconnections")
            stats = client.stats
        assert unfinished > 0, "the second kill came after every task had finished"
        assert outcomes == [{"slept_ms": sleep_ms(i)} for i in range(TASKS)]
        assert len({t.task_id for t in tasks}) == TASKS
        # Each handle resolved once; every repeat the wire delivered was dropped.
        assert stats["outcomes"] - stats["duplicates"] - stats["resubmitted"] == TASKS, stats
        # Resubmissions under idempotency keys made no second task.
        assert legacygpu.Admin(coordinator.http_url).tasks(limit=1)["total"] == TASKS

    asyncio.run(go())


def test_a_worker_killed_mid_task_hands_it_to_another(procs):
    c = Coordinator(FAST)
    procs.append(c)
    a = worker(c.ws_url, "worker-a", "--slots", "1", "--no-gpu")
    procs.append(a)
    with legacygpu.Client(c.ws_url) as client:
        task = client.submit("sleep", {"ms": 1500})
        until(lambda: task.status().get("peer_id") == "worker-a", "the task runs on worker-a")
        procs.append(worker(c.ws_url, "worker-b", "--slots", "1", "--no-gpu"))
        a.kill9()
        assert task.result(30) == {"slept_ms": 1500}
        assert (task.outcome["peer_id"], task.outcome["attempt"]) == ("worker-b", 2)


def test_restart_without_a_store_runs_forgotten_tasks_again(procs):
    c = Coordinator(["--no-store", *FAST], bind=f"127.0.0.1:{free_port()}")
    procs.append(c)
    with legacygpu.Client(c.ws_url) as client:
        tasks = client.submit_many("echo", [{"n": n} for n in range(20)])  # no worker yet: all queued
        c.kill9()
        c = c.restart()
        procs.append(c)
        # Named in `awaiting`, unknown to the new coordinator, submitted again.
        until(lambda: client.stats["resubmitted"] == 20, "the forgotten tasks were submitted again")
        procs.append(worker(c.ws_url, "w", "--no-gpu"))
        assert [t.result(30) for t in tasks] == [{"n": n} for n in range(20)]


def test_busy_queue_raises_busy(procs):
    c = Coordinator(["--max-queued", "1"])
    procs.append(c)
    with legacygpu.Client(c.ws_url) as client:
        client.submit("echo", {})
        with pytest.raises(legacygpu.Busy) as e:
            client.submit("echo", {})
        assert e.value.code == "busy" and e.value.retry_after_s > 0
        with pytest.raises(legacygpu.Busy):
            client.submit_many("echo", [{}, {}], busy_retry_s=0.1)


def test_token_auth(procs):
    c = Coordinator(["--token", "s3cret"])
    procs.append(c)
    with pytest.raises(legacygpu.Unauthorized):
        legacygpu.Client(c.ws_url)
    with pytest.raises(legacygpu.Unauthorized):
        legacygpu.Client(c.ws_url, token="wrong")
    with pytest.raises(legacygpu.Unauthorized):
        legacygpu.Admin(c.http_url).health()
    procs.append(worker(c.ws_url, "w", "--no-gpu", "--token", "s3cret"))
    with legacygpu.Client(c.ws_url, token="s3cret") as client:
        assert client.run("echo", {"ok": True}, timeout=30) == {"ok": True}
    assert legacygpu.Admin(c.http_url, api_key="s3cret").health()["total_workers"] == 1


def test_connection_lost_only_when_the_budget_is_spent(procs):
    c = Coordinator()
    procs.append(c)
    with legacygpu.Client(c.ws_url, give_up_after_s=0.5) as client:
        queued = client.submit("echo", {})  # no worker: it waits
        c.kill9()
        with pytest.raises(legacygpu.ConnectionLost):
            queued.result(30)
        with pytest.raises(legacygpu.ConnectionLost):
            client.submit("echo", {})


def test_no_reconnect_loses_the_connection_at_once(procs):
    c = Coordinator()
    procs.append(c)
    with legacygpu.Client(c.ws_url, reconnect=False) as client:
        queued = client.submit("echo", {})
        c.kill9()
        with pytest.raises(legacygpu.ConnectionLost, match="reconnect is off"):
            queued.result(30)


def test_nothing_listening_fails_to_connect():
    with pytest.raises(legacygpu.ConnectFailed):
        legacygpu.Client(f"ws://127.0.0.1:{free_port()}", connect_timeout_s=5)


def test_the_token_never_reaches_the_logs(procs, caplog):
    # As long as real secrets (43 characters): websockets' debug log shortens
    # long frames to their head and tail, which must not show a piece of it.
    token = "vst-Q7h2Kp9ZmW4rT8bN1cX5vY3jL6dF0gHsA2eR5uI"
    c = Coordinator(["--token", token])
    procs.append(c)
    procs.append(worker(c.ws_url, "w", "--no-gpu", "--token", token))
    with caplog.at_level(logging.DEBUG):
        with legacygpu.Client(c.ws_url, token=token) as client:
            client.run("echo", {"x": 1}, timeout=30)
    assert "Authorization: Bearer <redacted>" in caplog.text  # websockets' debug log of the upgrade
    for piece in (token, token[:12], token[-12:]):
        assert piece not in caplog.text, piece


def test_a_frozen_coordinator_is_left_for_the_next_url(procs):
    # A coordinator frozen with SIGSTOP keeps its socket open: only silence
    # tells. The client gives it up after silence_timeout_s and moves on to
    # the next URL, resubmitting under its key what was not acknowledged.
    frozen, spare = Coordinator(), Coordinator()
    procs += [frozen, spare]
    procs.append(worker(spare.ws_url, "w"))
    urls = f"{frozen.ws_url},{spare.ws_url}"
    with legacygpu.Client(urls, silence_timeout_s=1.5, connect_timeout_s=1.0) as client:
        os.kill(frozen.proc.pid, signal.SIGSTOP)
        try:
            handle = client.submit("echo", {"after": "freezing"})
            assert handle.result(30) == {"after": "freezing"}
            assert client.stats["reconnects"] >= 1
        finally:
            os.kill(frozen.proc.pid, signal.SIGCONT)
