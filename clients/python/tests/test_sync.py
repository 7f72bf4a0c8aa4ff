"""The blocking Client against the real binary: every method."""

from __future__ import annotations

import pytest

import legacygpu
from legacygpu import inputs


@pytest.fixture
def client(cluster):
    with legacygpu.Client(cluster.ws_url) as c:
        yield c


def test_submit_result_id_status(client, cluster):
    task = client.submit("echo", {"hello": "world"}, priority="HIGH", timeout_s=30, max_attempts=2,
                         requirements={"gpu": False}, idempotency_key="sync-echo-1")
    assert task.id.startswith("t-")
    assert task.accepted["status"] in ("queued", "assigned")
    assert task.result(timeout=30) == {"hello": "world"}
    assert task.done()
    assert task.outcome["peer_id"] == "w1"
    status = task.status()
    assert (status["status"], status["id"], status["task_id"]) == ("completed", task.id, task.task_id)
    # The cluster id is the REST API's too.
    admin = legacygpu.Admin(cluster.http_url)
    assert admin.status(task.id)["client_task_id"] == task.task_id


def test_run_and_own_task_id(client):
    assert client.run("echo", [1, 2, 3], task_id="my-own-id", timeout=30) == [1, 2, 3]


def test_idempotency_key_returns_the_original_task(client):
    first = client.submit("echo", {"n": 1}, idempotency_key="same-key")
    assert first.task_id == "same-key"
    assert first.result(30) == {"n": 1}
    again = client.submit("echo", {"n": 2}, idempotency_key="same-key")
    assert again.accepted.get("existing") is True
    assert again.id == first.id
    assert again.result(30) == {"n": 1}
    with pytest.raises(ValueError, match="same value"):
        client.submit("echo", {}, task_id="x", idempotency_key="y")


def test_submit_many_as_completed_and_map(client):
    tasks = client.submit_many("echo", [{"i": i} for i in range(300)], in_flight=64)
    assert [t.result(30) for t in tasks] == [{"i": i} for i in range(300)]
    assert len({t.id for t in tasks}) == 300
    sleepy = client.submit_many("sleep", [{"ms": 300}, {"ms": 1}], in_flight=2)
    order = [t.task_id for t in client.as_completed(sleepy, timeout=30)]
    assert order == [sleepy[1].task_id, sleepy[0].task_id]
    assert list(client.map("echo", [{"x": x} for x in range(50)], in_flight=8)) == [{"x": x} for x in range(50)]


def test_map_raises_the_failed_task_in_its_turn(client):
    results = client.map("physics", [inputs.physics([], steps=0), {"steps": "not a number"}])
    assert next(results)["steps"] == 0
    with pytest.raises(legacygpu.TaskFailed) as e:
        next(results)
    assert e.value.code == "invalid_input"


def test_cancel_timeout_and_failure_raise_typed_errors(client):
    slow = client.submit("sleep", {"ms": 20_000})
    slow.cancel()
    with pytest.raises(legacygpu.TaskCancelled) as e:
        slow.result(30)
    assert e.value.status == "cancelled" and e.value.id == slow.id
    timed = client.submit("sleep", {"ms": 20_000}, timeout_s=0.3)
    with pytest.raises(legacygpu.TaskTimedOut):
        timed.result(30)
    with pytest.raises(legacygpu.TaskFailed) as failed:
        client.run("physics", {"steps": -1}, timeout=30)
    assert failed.value.code == "invalid_input" and "u32" in failed.value.reason
    # Every TaskError is a LegacyGpuError.
    assert isinstance(failed.value, legacygpu.LegacyGpuError)


def test_result_timeout_is_the_callers_not_the_tasks(client):
    task = client.submit("sleep", {"ms": 600})
    with pytest.raises(TimeoutError):
        task.result(timeout=0.05)
    assert task.result(timeout=30) == {"slept_ms": 600}


def test_waiting_reason_and_status_of_a_task_no_peer_can_run(client):
    task = client.submit("inference", {"model": "nobody-has-it", "image": ""})
    assert "no capable peer" in task.accepted.get("waiting_reason", "")
    assert task.status()["status"] == "queued"
    task.cancel()
    with pytest.raises(legacygpu.TaskCancelled):
        task.result(30)


def test_physics_helper_is_deterministic(client):
    scene = inputs.physics(
        [inputs.sphere("ball", 0.5, position=(0, 4, 0), linear_velocity=(1, 0, 0), density=2.0, restitution=0.5),
         inputs.box(2, (0.5, 0.25, 0.5), position=(3, 1, 0), mass=5.0)],
        steps=120, ground=0.0,
    )
    first, second = client.map("physics", [scene, scene])
    assert [b["id"] for b in first["bodies"]] == ["ball", 2]
    assert first["bodies"][0]["position"][1] < 4.0  # it fell
    assert first["checksum"] == second["checksum"]


def test_gamer_id_and_stats(client):
    assert client.gamer_id.startswith("py-")
    client.run("echo", {}, timeout=30)
    stats = client.stats
    assert stats["outcomes"] >= 1 and stats["duplicates"] == 0 and stats["reconnects"] == 0
