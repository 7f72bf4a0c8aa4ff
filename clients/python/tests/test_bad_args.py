"""Bad arguments raise TypeError/ValueError before anything is sent: after
all of them, the coordinator has seen no task, and the connection still works."""

from __future__ import annotations

import asyncio
import math

import pytest

import legacygpu
from legacygpu import inputs

BAD_SUBMITS = [
    ((42, {}), {}, TypeError),
    (("", {}), {}, ValueError),
    (("x" * 257, {}), {}, ValueError),
    (("echo\n", {}), {}, ValueError),
    (("echo", {"x": math.nan}), {}, ValueError),
    (("echo", {"x": object()}), {}, TypeError),
    (("echo", {}), {"priority": "URGENT"}, ValueError),
    (("echo", {}), {"priority": 2**40}, ValueError),
    (("echo", {}), {"priority": 1.5}, TypeError),
    (("echo", {}), {"timeout_s": 0}, ValueError),
    (("echo", {}), {"timeout_s": -1}, ValueError),
    (("echo", {}), {"timeout_s": math.inf}, ValueError),
    (("echo", {}), {"timeout_s": "10"}, TypeError),
    (("echo", {}), {"timeout_s": True}, TypeError),
    (("echo", {}), {"queue_timeout_s": 8 * 24 * 3600}, ValueError),
    (("echo", {}), {"max_attempts": 0}, ValueError),
    (("echo", {}), {"max_attempts": 101}, ValueError),
    (("echo", {}), {"requirements": {"gpus": True}}, ValueError),
    (("echo", {}), {"requirements": {"gpu": "yes"}}, TypeError),
    (("echo", {}), {"requirements": {"min_vram_mb": -1}}, ValueError),
    (("echo", {}), {"requirements": {"min_vram_mb": 2**70}}, ValueError),  # past the coordinator's u64
    (("echo", {}), {"timeout_s": 10**400}, ValueError),  # an int too large for a float
    (("echo", {}), {"requirements": ["gpu"]}, TypeError),
    (("echo", {}), {"idempotency_key": ""}, ValueError),
    (("echo", {}), {"task_id": 7}, TypeError),
    (("echo", {}), {"task_id": "c1\x85"}, ValueError),
    (("echo", {"blob": "x" * 2_000_000}), {}, ValueError),  # over max_frame_bytes below
    (("echo", {}), {"accept_timeout": 0}, ValueError),
    (("echo", {}), {"accept_timeout": "1"}, TypeError),
]


@pytest.mark.parametrize("args,kwargs,error", BAD_SUBMITS)
def test_bad_submit_arguments(coordinator, args, kwargs, error):
    with legacygpu.Client(coordinator.ws_url, max_frame_bytes=1_000_000) as client:
        with pytest.raises(error):
            client.submit(*args, **kwargs)
        with pytest.raises((TypeError, ValueError)):
            client.submit_many("echo", [{}, {"bad": math.nan}])  # the first is not sent either
        with pytest.raises(TypeError):
            client.submit_many("echo", {"not": "a list"})
        with pytest.raises(ValueError):
            client.submit_many("echo", [{}], in_flight=0)
        # The connection is unharmed; nothing reached the coordinator.
        assert legacygpu.Admin(coordinator.http_url).tasks()["total"] == 0
        client.submit("echo", {})
        assert legacygpu.Admin(coordinator.http_url).tasks()["total"] == 1


def test_bad_client_arguments():
    with pytest.raises(ValueError):
        legacygpu.Client("http://127.0.0.1:8765")
    with pytest.raises(TypeError):
        legacygpu.AsyncClient("ws://127.0.0.1:8765", token=123)
    with pytest.raises(ValueError):
        legacygpu.AsyncClient("wss://127.0.0.1:8765", ca_hash="zz" * 32)
    with pytest.raises(ValueError, match="wss://"):
        legacygpu.AsyncClient("ws://127.0.0.1:8765", ca_hash="AB" * 32)  # a pin over plaintext
    with pytest.raises(ValueError, match="not a join token"):
        legacygpu.AsyncClient("wss://127.0.0.1:8765", token="lgj1-not-a-token")
    with pytest.raises(ValueError):
        legacygpu.AsyncClient("wss://127.0.0.1:8765", ca_file="x.pem", ca_hash="ab" * 32)
    with pytest.raises(ValueError):
        legacygpu.AsyncClient("ws://127.0.0.1:8765", give_up_after_s=0)
    with pytest.raises(ValueError):
        legacygpu.Admin("ws://127.0.0.1:8000")


def test_bad_generate_arguments(coordinator):
    async def go():
        async with legacygpu.AsyncClient(coordinator.ws_url) as client:
            for kwargs, error in [
                ({}, ValueError),  # neither prompt nor messages
                ({"prompt": "hi", "messages": [{"role": "user", "content": "hi"}]}, ValueError),
                ({"prompt": 3}, TypeError),
                ({"messages": "hi"}, TypeError),
                ({"messages": [{"role": "user"}]}, TypeError),
                ({"prompt": "hi", "max_tokens": 0}, ValueError),
                ({"prompt": "hi", "temperature": -0.1}, ValueError),
                ({"prompt": "hi", "top_p": 0}, ValueError),
                ({"prompt": "hi", "stop": [1]}, TypeError),
                ({"prompt": "hi", "seed": -1}, ValueError),
            ]:
                with pytest.raises(error):
                    client.generate("tiny-llm", **kwargs)
        assert legacygpu.Admin(coordinator.http_url).tasks()["total"] == 0

    asyncio.run(asyncio.wait_for(go(), 60))


def test_input_builders_check_their_arguments(tmp_path):
    with pytest.raises(ValueError):
        inputs.sphere("s", 0)
    with pytest.raises(ValueError):
        inputs.box("b", (1, 0, 1))
    with pytest.raises(ValueError):
        inputs.sphere("s", 1, mass=1, density=1)
    with pytest.raises(ValueError):
        inputs.sphere("s", 1, colour="red")
    with pytest.raises(TypeError):
        inputs.sphere("s", 1, position=(0, 1))
    with pytest.raises(ValueError):
        inputs.physics([inputs.sphere(1, 1), inputs.sphere(1, 2)], steps=1)
    with pytest.raises(ValueError):
        inputs.physics([], steps=1, dt=2)
    with pytest.raises(ValueError):
        inputs.physics([], steps=-1)
    (tmp_path / "not-an-image.txt").write_text("hello")
    with pytest.raises(ValueError, match="neither a PNG nor a JPEG"):
        inputs.inference("tiny", tmp_path / "not-an-image.txt")
    with pytest.raises(FileNotFoundError):
        inputs.inference("tiny", tmp_path / "missing.png")
    with pytest.raises(ValueError):
        inputs.inference("tiny", b"")
    with pytest.raises(TypeError):
        inputs.inference("tiny", 12)
    with pytest.raises(ValueError):
        inputs.matmul([1, 2], [3, 4], m=2, k=2, n=2)
    with pytest.raises(ValueError):
        inputs.matmul([1] * 4, [1] * 4, m=2, k=2, n=2, seed=1)
    with pytest.raises(ValueError):
        inputs.matmul(m=5000, k=1, n=1, seed=1)
    with pytest.raises(ValueError):
        inputs.nbody(steps=10)
    with pytest.raises(ValueError):
        inputs.matmul(m=2, k=2, n=2, seed=1, device="tpu")


def test_the_gpu_helper_names_the_op():
    assert inputs.gpu("matmul", m=2, k=2, n=2, seed=1) == inputs.matmul(m=2, k=2, n=2, seed=1)
    assert inputs.gpu("nbody", n=8, steps=2, seed=3) == inputs.nbody(n=8, steps=2, seed=3)
    with pytest.raises(ValueError, match="unknown gpu op"):
        inputs.gpu("conv2d", m=1)
    with pytest.raises(ValueError):
        inputs.gpu("matmul", m=0, k=1, n=1, seed=1)
