"""A scripted coordinator (a websockets server on 127.0.0.1) for what the
real binary will not do on demand: dropped or reordered ``task_progress``
deltas, a stream cut short, and TLS with certificates a test makes (a wrong
pin, an impostor, a wrong name). It speaks the protocol's literal JSON
(docs/PROTOCOL.md); each test says what it answers to a ``task_request``."""

from __future__ import annotations

import json
import ssl
from typing import Any, Awaitable, Callable, Dict, List, Optional

from websockets.asyncio.server import ServerConnection, serve

Script = Callable[[ServerConnection, Dict[str, Any]], Awaitable[None]]


class Scripted:
    def __init__(self, on_request: Optional[Script] = None, ssl_context: Optional[ssl.SSLContext] = None) -> None:
        self.on_request = on_request
        self.ssl = ssl_context
        self.requests: List[Dict[str, Any]] = []
        #: The HTTP upgrade requests seen (headers), to check what a client sent.
        self.upgrades: List[Dict[str, str]] = []
        self.url = ""

    async def __aenter__(self) -> "Scripted":
        def process_request(connection: ServerConnection, request: Any) -> None:
            self.upgrades.append(dict(request.headers.raw_items()))

        self.server = await serve(self._handle, "127.0.0.1", 0, ssl=self.ssl, process_request=process_request,
                                  compression=None)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"{'wss' if self.ssl else 'ws'}://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, ws: ServerConnection) -> None:
        async for text in ws:
            msg = json.loads(text)
            if msg["msg_type"] == "register_gamer":
                await ws.send(json.dumps({"msg_type": "registration_ack", "status": "registered",
                                          "gamer_id": msg["gamer_id"]}))
            elif msg["msg_type"] == "task_request":
                self.requests.append(msg)
                await ws.send(json.dumps({"msg_type": "task_accepted", "task_id": msg["task_id"],
                                          "id": f"t-{len(self.requests)}", "status": "queued"}))
                if self.on_request is not None:
                    await self.on_request(ws, msg)


def progress(task_id: str, seq: int, text: str, attempt: int = 1) -> str:
    return json.dumps({"msg_type": "task_progress", "task_id": task_id, "id": "t-1", "attempt": attempt,
                       "seq": seq, "text": text, "tokens": 1})


def result(task_id: str, text: str) -> str:
    return json.dumps({"msg_type": "task_result", "task_id": task_id, "id": "t-1", "status": "completed",
                       "result": {"text": text, "finish_reason": "stop", "prompt_tokens": 3,
                                  "completion_tokens": 4, "device": "cpu"}})
