"""legacygpu.Admin against the real binary's HTTP API, owner controls
(pause, resume, drain, retry) included."""

from __future__ import annotations

import time

import pytest
from cluster import FAST, Coordinator, worker

import legacygpu


@pytest.fixture(scope="module")
def admin_cluster():
    c = Coordinator([*FAST, "--api-keys", "admin-key-1:admin,client-key-1:client,readonly-key-1:read-only"])
    w = worker(c.ws_url, "w1", "--slots", "2", "--no-gpu")
    c.worker = w
    yield c
    w.kill9()
    c.kill9()


def test_read_routes(admin_cluster):
    admin = legacygpu.Admin(admin_cluster.http_url, api_key="readonly-key-1")
    from cluster import until

    until(lambda: admin.health()["total_workers"] == 1, "the worker registered")
    assert admin.health()["status"] == "HEALTHY"
    assert "throughput_per_second" in admin.metrics()
    assert admin.config()["store"] == "sqlite"
    workers = admin.workers()
    assert workers["total"] == 1 and workers["workers"][0]["worker_id"] == "w1"
    assert admin.workers(status="healthy")["total"] == 1
    assert admin.worker("w1")["worker_id"] == "w1"
    stats = admin.worker_stats("w1")
    assert stats["worker_id"] == "w1" and stats["running_tasks"] == []
    with pytest.raises(legacygpu.ApiError) as e:
        admin.worker("nobody")
    assert (e.value.status, e.value.code) == (404, "not_found")
    with pytest.raises(legacygpu.ApiError) as bad:
        admin.workers(status="sleepy")
    assert bad.value.status == 400


def test_submit_status_result_cancel(admin_cluster):
    admin = legacygpu.Admin(admin_cluster.http_url, api_key="client-key-1")
    sub = admin.submit("echo", {"via": "rest"}, priority="HIGH", idempotency_key="rest-1")
    assert sub["task_id"].startswith("t-")
    done = admin.result(sub["task_id"], timeout=30)
    assert (done["status"], done["result"], done["worker_id"]) == ("completed", {"via": "rest"}, "w1")
    assert admin.status(sub["task_id"])["status"] == "completed"
    assert admin.submit("echo", {"via": "again"}, idempotency_key="rest-1")["existing"] is True
    listed = admin.tasks(task_type="echo", limit=10)
    assert sub["task_id"] in [t["task_id"] for t in listed["tasks"]]

    slow = admin.submit("sleep", {"ms": 20_000})
    with pytest.raises(TimeoutError):
        admin.result(slow["task_id"], timeout=0.1)
    admin.cancel(slow["task_id"])
    with pytest.raises(legacygpu.TaskCancelled):
        admin.result(slow["task_id"], timeout=30)
    with pytest.raises(legacygpu.ApiError) as e:
        admin.cancel(slow["task_id"])
    assert (e.value.status, e.value.code) == (409, "task_finished")
    failed = admin.submit("physics", {"steps": -1})
    with pytest.raises(legacygpu.TaskFailed) as f:
        admin.result(failed["task_id"], timeout=30)
    assert f.value.code == "invalid_input"
    with pytest.raises(ValueError):
        admin.submit("echo", {}, timeout_s=-1)  # checked before sending


def test_task_filters_and_keyset_paging(admin_cluster):
    admin = legacygpu.Admin(admin_cluster.http_url, api_key="readonly-key-1")
    since_ms = int(time.time() * 1000) - 1
    with legacygpu.Client(admin_cluster.ws_url, gamer_id="filter-gamer") as client:
        tasks = client.submit_many("echo", [{"n": n} for n in range(5)])
        assert [t.result(30) for t in tasks] == [{"n": n} for n in range(5)]
    mine = {t.id for t in tasks}
    owner = "gamer:filter-gamer"
    assert admin.tasks(owner=owner)["total"] == 5
    assert admin.tasks(owner=owner, worker_id="w1", status="completed", task_type="echo")["total"] == 5
    assert admin.tasks(owner=owner, worker_id="nobody")["total"] == 0
    assert admin.tasks(owner=owner, submitted_from_ms=since_ms)["total"] == 5
    assert admin.tasks(owner=owner, submitted_to_ms=since_ms)["total"] == 0
    assert not mine & {t["task_id"] for t in admin.tasks(owner="api", limit=1000)["tasks"]}
    # Keyset paging: each page below the last one's next_before.
    first = admin.tasks(owner=owner, limit=2)
    second = admin.tasks(owner=owner, limit=2, before=first["next_before"])
    assert len(first["tasks"]) == len(second["tasks"]) == 2 and first["next_before"]
    assert not {t["task_id"] for t in first["tasks"]} & {t["task_id"] for t in second["tasks"]}
    assert {t["task_id"] for t in admin.iter_tasks(owner=owner, page_size=2)} == mine
    assert len(list(admin.iter_tasks(owner=owner, page_size=2))) == 5
    with pytest.raises(ValueError):
        admin.tasks(limit=-1)  # checked before sending
    with pytest.raises(TypeError):
        admin.tasks(owner=3)  # type: ignore[arg-type]


def test_owner_controls(admin_cluster):
    from cluster import until

    admin = legacygpu.Admin(admin_cluster.http_url, api_key="admin-key-1")
    assert admin.pause("w1")["status"] == "paused"
    assert admin.worker("w1")["status"] == "paused"
    held = admin.submit("echo", {"held": True})
    assert admin.status(held["task_id"])["status"] == "queued", "a paused worker gets nothing new"
    assert admin.resume("w1")["status"] == "resumed"
    assert admin.result(held["task_id"], timeout=30)["worker_id"] == "w1"

    failed = admin.submit("physics", {"steps": -1})
    with pytest.raises(legacygpu.TaskFailed):
        admin.result(failed["task_id"], timeout=30)
    assert admin.retry(failed["task_id"])["status"] == "queued"
    with pytest.raises(legacygpu.TaskFailed):
        admin.result(failed["task_id"], timeout=30)
    assert admin.status(failed["task_id"])["attempt"] == 2, "it ran again under the same id"
    with pytest.raises(legacygpu.ApiError) as done:
        admin.retry(held["task_id"])
    assert (done.value.status, done.value.code) == (409, "task_completed")
    with pytest.raises(legacygpu.Unauthorized):
        legacygpu.Admin(admin_cluster.http_url, api_key="client-key-1").pause("w1")

    # Bulk: a dry run counts what the filter matches, a confirmed one acts.
    again = admin.submit("physics", {"steps": -1})
    with pytest.raises(legacygpu.TaskFailed):
        admin.result(again["task_id"], timeout=30)
    failed_now = admin.tasks(status="failed", task_type="physics")["total"]
    assert failed_now >= 2  # this test's two, and any an earlier test left
    counted = admin.bulk("retry", status="failed", task_type="physics")
    assert (counted["matched"], counted["dry_run"], counted["done"]) == (failed_now, True, 0), counted
    done_bulk = admin.bulk("retry", confirm=True, status="failed", task_type="physics")
    assert (done_bulk["done"], done_bulk["dry_run"]) == (failed_now, False), done_bulk
    with pytest.raises(legacygpu.TaskFailed):
        admin.result(again["task_id"], timeout=30)  # it ran again, and failed again
    assert admin.status(again["task_id"])["attempt"] == 2
    with pytest.raises(TypeError):
        admin.bulk("retry", colour="red")  # checked before sending
    with pytest.raises(ValueError):
        admin.bulk("delete")
    # Clearing a worker that is not quarantined clears nothing.
    assert admin.clear("w1")["cleared"] is False

    # A drained worker finishes and leaves for good (it exits).
    assert admin.drain("w1")["status"] == "draining"
    admin_cluster.worker.popen.wait(timeout=30)
    until(lambda: admin.health()["total_workers"] == 0, "the drained worker left")
    with pytest.raises(legacygpu.ApiError) as gone:
        admin.pause("w1")
    assert gone.value.status == 404


def test_roles_and_admin_routes(admin_cluster):
    with pytest.raises(legacygpu.Unauthorized) as e:
        legacygpu.Admin(admin_cluster.http_url, api_key="readonly-key-1").submit("echo", {})
    assert e.value.status == 403
    with pytest.raises(legacygpu.Unauthorized):
        legacygpu.Admin(admin_cluster.http_url, api_key="wrong-key-1").health()
    admin = legacygpu.Admin(admin_cluster.http_url, api_key="admin-key-1")
    admin.set_balancing("ROUND_ROBIN")
    assert admin.config()["balancing_strategy"] == "ROUND_ROBIN"
    credential = admin.register_worker("new-box")
    assert credential["worker_id"] == "new-box" and credential["token"]
    admin.shutdown()
    admin_cluster.proc.popen.wait(timeout=30)


def test_busy_over_rest(procs):
    c = Coordinator(["--max-queued", "1"])
    procs.append(c)
    admin = legacygpu.Admin(c.http_url)
    admin.submit("echo", {})
    with pytest.raises(legacygpu.Busy) as e:
        admin.submit("echo", {})
    assert e.value.status == 503 and e.value.retry_after_s > 0


def test_unreachable_api():
    from cluster import free_port

    with pytest.raises(legacygpu.ConnectFailed):
        legacygpu.Admin(f"http://127.0.0.1:{free_port()}").health()
