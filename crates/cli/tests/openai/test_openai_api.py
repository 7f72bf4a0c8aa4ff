"""The official `openai` Python package against the cluster's OpenAI API.

Run by crates/cli/tests/it/openai.rs, which starts the coordinator (with API
keys) and a worker serving the tiny random-weight model `tiny` (context 512,
a byte-level vocabulary), and passes the base URL and keys in the
environment. Greedy decoding (temperature 0) gives the same tokens every
time on one worker, so streamed and whole answers can be compared exactly.
"""

from __future__ import annotations

import os

import openai
import pytest

BASE = os.environ["LEGACYGPU_OPENAI_BASE"]
KEY = os.environ["LEGACYGPU_OPENAI_KEY"]
VIEWER = os.environ["LEGACYGPU_OPENAI_VIEWER_KEY"]
MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]


def client(key: str = KEY) -> openai.OpenAI:
    # No retries: a refusal must show as it is.
    return openai.OpenAI(base_url=BASE, api_key=key, max_retries=0, timeout=60)


def test_models_lists_the_pool():
    models = client().models.list()
    ids = [m.id for m in models.data]
    assert "tiny" in ids
    tiny = client().models.retrieve("tiny")
    assert tiny.id == "tiny" and tiny.object == "model"
    with pytest.raises(openai.NotFoundError) as e:
        client().models.retrieve("no-such-model")
    assert e.value.code == "model_not_found"


def test_chat_completion_whole_and_streamed_agree():
    # Enough tokens that the worker's deltas (one per 20 ms at most) are several.
    n = 200
    whole = client().chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=n, temperature=0)
    assert whole.object == "chat.completion"
    assert whole.id.startswith("chatcmpl-t-")
    choice = whole.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason == "length"
    assert whole.usage.completion_tokens == n
    assert whole.usage.prompt_tokens > 0
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + n

    stream = client().chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=n, temperature=0,
                                              stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == n
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1 and chunks[0].object == "chat.completion.chunk"
    # Streamed output came in more than one piece.
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 2


def test_completion_whole_and_streamed_agree():
    whole = client().completions.create(model="tiny", prompt="Once upon a time", max_tokens=12, temperature=0)
    assert whole.object == "text_completion" and whole.id.startswith("cmpl-t-")
    assert whole.usage.completion_tokens == 12
    chunks = list(client().completions.create(model="tiny", prompt="Once upon a time", max_tokens=12,
                                              temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "length"


def test_a_seed_repeats_a_sampled_answer():
    ask = dict(model="tiny", messages=MESSAGES, max_tokens=12, temperature=0.9, seed=1234)
    first = client().chat.completions.create(**ask).choices[0].message.content
    assert client().chat.completions.create(**ask).choices[0].message.content == first


def test_async_client_streams():
    import asyncio

    async def run() -> str:
        aio = openai.AsyncOpenAI(base_url=BASE, api_key=KEY, max_retries=0, timeout=60)
        stream = await aio.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=8,
                                                   temperature=0, stream=True)
        text = ""
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
        await aio.close()
        return text

    whole = client().chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=8, temperature=0)
    assert asyncio.run(run()) == whole.choices[0].message.content


def test_unknown_model_is_404():
    for stream in (False, True):
        with pytest.raises(openai.NotFoundError) as e:
            client().chat.completions.create(model="gpt-17", messages=MESSAGES, stream=stream)
        assert e.value.code == "model_not_found"
        assert e.value.body["param"] == "model"


@pytest.mark.parametrize("extra, param", [
    ({"temperature": 3}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"n": 2}, "n"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
])
def test_bad_parameters_are_400(extra, param):
    with pytest.raises(openai.BadRequestError) as e:
        client().chat.completions.create(model="tiny", messages=MESSAGES, **extra)
    assert e.value.body["param"] == param
    assert e.value.body["type"] == "invalid_request_error"


def test_empty_messages_and_a_prompt_beyond_the_context_are_400():
    with pytest.raises(openai.BadRequestError):
        client().chat.completions.create(model="tiny", messages=[])
    long = "x" * 2000  # a byte-level vocabulary: over the 512-token context
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as e:
            client().completions.create(model="tiny", prompt=long, max_tokens=8, stream=stream)
        assert e.value.code == "limit_exceeded"


def test_keys_apply():
    with pytest.raises(openai.AuthenticationError) as e:
        client("not-a-key-at-all").chat.completions.create(model="tiny", messages=MESSAGES)
    assert e.value.status_code == 401
    assert e.value.body["type"] == "authentication_error"
    # A read-only key lists models but may not generate.
    assert any(m.id == "tiny" for m in client(VIEWER).models.list().data)
    with pytest.raises(openai.PermissionDeniedError):
        client(VIEWER).chat.completions.create(model="tiny", messages=MESSAGES)


def post(path: str, body: bytes) -> "tuple[int, dict]":
    import json
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"{BASE}{path}", data=body, method="POST",
                                 headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_malformed_bodies_are_400():
    status, body = post("/chat/completions", b"{not json")
    assert status == 400
    assert set(body["error"]) == {"message", "type", "param", "code"}
    status, _ = post("/chat/completions", b'{"model": "tiny", "messages": "hi"}')
    assert status == 400
    status, _ = post("/completions", b'{"model": "tiny", "prompt": [1, 2]}')
    assert status == 400
