"""The blocking client: :class:`Client`, for scripts, notebooks and game loops.

It runs an :class:`~legacygpu.AsyncClient` on an asyncio event loop in a
background thread of its own (one per client), so the connection keeps
reading, reconnecting and resubmitting while the caller's thread does other
work — a game loop can submit a frame's physics and go on drawing. Every
method has the asynchronous one's arguments and behaviour and blocks the
calling thread only; a :class:`Client` may be used from several threads.

>>> with Client("ws://127.0.0.1:8765") as client:            # doctest: +SKIP
...     print(client.submit("echo", {"hello": "world"}).result(timeout=10))
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ssl as _ssl
import threading
from typing import Any, Awaitable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, TypeVar, Union

from . import errors
from ._wire import DEFAULT_MAX_FRAME_BYTES, Priority
from .aio import DEFAULT_BUSY_RETRY_S, DEFAULT_IN_FLIGHT, AsyncClient, AsyncGeneration, AsyncTask, unwrap

T = TypeVar("T")


class Task:
    """A submitted task (the blocking twin of :class:`~legacygpu.aio.AsyncTask`)."""

    def __init__(self, client: "Client", inner: AsyncTask, done: "concurrent.futures.Future[Any]") -> None:
        self._client = client
        self._inner = inner
        self._done = done
        self.task_id: str = inner.task_id

    @property
    def id(self) -> str:
        """The cluster-wide id (``t-42``), for the REST API and the CLI."""
        return self._inner.id

    @property
    def accepted(self) -> Dict[str, Any]:
        return self._inner.accepted

    @property
    def outcome(self) -> Optional[Dict[str, Any]]:
        return self._inner.outcome if self._done.done() else None

    def done(self) -> bool:
        return self._done.done()

    def result(self, timeout: Optional[float] = None) -> Any:
        """The task's result; raises its :class:`~legacygpu.TaskError` when it
        ended without one, ``TimeoutError`` when ``timeout`` seconds pass first."""
        try:
            outcome = self._done.result(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"task {self.task_id} did not finish within {timeout} s") from None
        return unwrap(outcome)

    def cancel(self) -> None:
        """Asks for the task to be cancelled (see :meth:`AsyncTask.cancel`)."""
        self._client._call(self._inner.cancel())

    def status(self, timeout: Optional[float] = 30.0) -> Dict[str, Any]:
        """Where the task stands, as the coordinator says."""
        return self._client._call(self._inner.status(), timeout)

    def __repr__(self) -> str:
        return f"<Task {self.task_id} id={self.id or '?'} done={self.done()}>"


class Generation:
    """The deltas of a streamed ``generate`` task (see :class:`~legacygpu.aio.AsyncGeneration`)."""

    def __init__(self, client: "Client", inner: AsyncGeneration) -> None:
        self._client = client
        self._inner = inner
        self._iter: Any = None

    @property
    def result(self) -> Optional[Dict[str, Any]]:
        return self._inner.result

    @property
    def gap(self) -> bool:
        return self._inner.gap

    def __iter__(self) -> Iterator[str]:
        # Idempotent: str.join (and others) call iter() on an iterator twice.
        if self._iter is None:
            self._iter = self._inner.__aiter__()
        return self

    def __next__(self) -> str:
        if self._iter is None:
            self.__iter__()
        try:
            delta: str = self._client._call(self._iter.__anext__())
            return delta
        except StopAsyncIteration:
            raise StopIteration from None

    def text(self) -> str:
        """Consumes the stream and returns the whole text."""
        return "".join(self)


class Client:
    """A blocking client; connects at construction. Takes the arguments of
    :class:`~legacygpu.AsyncClient` (``url``, ``token``, ``gamer_id``, ``ssl``,
    ``ca_file``, ``ca_hash``, ``reconnect``, ``give_up_after_s``…)."""

    def __init__(
        self,
        url: str,
        token: Optional[str] = None,
        *,
        gamer_id: Optional[str] = None,
        ssl: Optional[_ssl.SSLContext] = None,
        ca_file: Optional[str] = None,
        ca_hash: Optional[str] = None,
        reconnect: bool = True,
        resubmit_acknowledged: bool = False,
        reconnect_max_s: float = 5.0,
        give_up_after_s: Optional[float] = 60.0,
        connect_timeout_s: float = 10.0,
        silence_timeout_s: Optional[float] = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> None:
        # Checks the arguments first.
        self._async = AsyncClient(
            url, token, gamer_id=gamer_id, ssl=ssl, ca_file=ca_file, ca_hash=ca_hash, reconnect=reconnect,
            resubmit_acknowledged=resubmit_acknowledged, reconnect_max_s=reconnect_max_s,
            give_up_after_s=give_up_after_s, connect_timeout_s=connect_timeout_s,
            silence_timeout_s=silence_timeout_s, max_frame_bytes=max_frame_bytes,
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="legacygpu-client", daemon=True)
        self._thread.start()
        self._closed = False
        try:
            self._call(self._async.connect())
        except BaseException:
            self._stop_loop()
            raise

    @property
    def gamer_id(self) -> str:
        return self._async.gamer_id

    @property
    def connected(self) -> bool:
        """Whether a connection to a coordinator is up now (see :attr:`AsyncClient.connected`)."""
        return not self._closed and self._async.connected

    @property
    def stats(self) -> Dict[str, int]:
        return self._call(_value(lambda: self._async.stats))

    def _call(self, coro: Awaitable[T], timeout: Optional[float] = None) -> T:
        if self._closed:
            if asyncio.iscoroutine(coro):
                coro.close()
            raise errors.ClientClosed("the client is closed")
        fut = asyncio.run_coroutine_threadsafe(_awaited(coro), self._loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            # Since Python 3.11 this is the built-in TimeoutError, which the
            # call itself may raise (AcceptTimeout): that one goes through.
            if fut.done() and not fut.cancelled():
                return fut.result()
            fut.cancel()
            raise TimeoutError(f"no answer within {timeout} s") from None

    def _wrap(self, inner: AsyncTask) -> Task:
        done: "concurrent.futures.Future[Any]" = concurrent.futures.Future()
        outcome = inner._pending.outcome

        def copy(f: "asyncio.Future[Any]") -> None:
            done.set_result(f.result())

        # Runs on the loop thread (we are called from a coroutine there).
        outcome.add_done_callback(copy)
        return Task(self, inner, done)

    def submit(
        self,
        task_type: str,
        data: Any = None,
        *,
        task_id: Optional[str] = None,
        priority: Optional[Priority] = None,
        timeout_s: Optional[float] = None,
        queue_timeout_s: Optional[float] = None,
        max_attempts: Optional[int] = None,
        requirements: Optional[Mapping[str, Any]] = None,
        idempotency_key: Optional[str] = None,
        accept_timeout: Optional[float] = None,
    ) -> Task:
        """Submits a task and waits for its acceptance; see :meth:`AsyncClient.submit`.
        With ``accept_timeout``, :class:`~legacygpu.AcceptTimeout` carries a
        :class:`Task` handle of the submission (the client keeps it)."""

        async def go() -> Task:
            try:
                inner = await self._async.submit(
                    task_type, data, task_id=task_id, priority=priority, timeout_s=timeout_s,
                    queue_timeout_s=queue_timeout_s, max_attempts=max_attempts, requirements=requirements,
                    idempotency_key=idempotency_key, accept_timeout=accept_timeout,
                )
            except errors.AcceptTimeout as e:
                e.task = self._wrap(e.task)
                raise
            return self._wrap(inner)

        return self._call(go())

    def run(
        self,
        task_type: str,
        data: Any = None,
        *,
        timeout: Optional[float] = None,
        task_id: Optional[str] = None,
        priority: Optional[Priority] = None,
        timeout_s: Optional[float] = None,
        queue_timeout_s: Optional[float] = None,
        max_attempts: Optional[int] = None,
        requirements: Optional[Mapping[str, Any]] = None,
        idempotency_key: Optional[str] = None,
        accept_timeout: Optional[float] = None,
    ) -> Any:
        """Submits a task and waits (up to ``timeout`` s) for its result."""
        task = self.submit(
            task_type, data, task_id=task_id, priority=priority, timeout_s=timeout_s,
            queue_timeout_s=queue_timeout_s, max_attempts=max_attempts, requirements=requirements,
            idempotency_key=idempotency_key, accept_timeout=accept_timeout,
        )
        return task.result(timeout)

    def submit_many(
        self,
        task_type: str,
        inputs: Iterable[Any],
        *,
        in_flight: int = DEFAULT_IN_FLIGHT,
        busy_retry_s: float = DEFAULT_BUSY_RETRY_S,
        priority: Optional[Priority] = None,
        timeout_s: Optional[float] = None,
        queue_timeout_s: Optional[float] = None,
        max_attempts: Optional[int] = None,
        requirements: Optional[Mapping[str, Any]] = None,
    ) -> List[Task]:
        """Pipelined submission, ``in_flight`` unfinished at once; see :meth:`AsyncClient.submit_many`."""

        async def go() -> List[Task]:
            tasks = await self._async.submit_many(
                task_type, inputs, in_flight=in_flight, busy_retry_s=busy_retry_s, priority=priority,
                timeout_s=timeout_s, queue_timeout_s=queue_timeout_s, max_attempts=max_attempts,
                requirements=requirements,
            )
            return [self._wrap(t) for t in tasks]

        return self._call(go())

    def as_completed(self, tasks: Iterable[Task], timeout: Optional[float] = None) -> Iterator[Task]:
        """Yields the handles as their tasks finish; ``TimeoutError`` after ``timeout`` s."""
        by_future = {t._done: t for t in tasks}
        try:
            for f in concurrent.futures.as_completed(by_future, timeout):
                yield by_future[f]
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"not every task finished within {timeout} s") from None

    def map(
        self,
        task_type: str,
        inputs: Iterable[Any],
        *,
        in_flight: int = DEFAULT_IN_FLIGHT,
        busy_retry_s: float = DEFAULT_BUSY_RETRY_S,
        priority: Optional[Priority] = None,
        timeout_s: Optional[float] = None,
        queue_timeout_s: Optional[float] = None,
        max_attempts: Optional[int] = None,
        requirements: Optional[Mapping[str, Any]] = None,
    ) -> Iterator[Any]:
        """Yields results in input order, ``in_flight`` tasks running ahead; see :meth:`AsyncClient.map`."""
        agen = self._call(_value(lambda: self._async.map(
            task_type, inputs, in_flight=in_flight, busy_retry_s=busy_retry_s, priority=priority,
            timeout_s=timeout_s, queue_timeout_s=queue_timeout_s, max_attempts=max_attempts,
            requirements=requirements,
        )))
        while True:
            try:
                yield self._call(agen.__anext__())
            except StopAsyncIteration:
                return

    def generate(
        self,
        model: str,
        prompt: Optional[str] = None,
        *,
        messages: Optional[Sequence[Mapping[str, str]]] = None,
        max_tokens: Optional[int] = None,
        temperature: Optional[float] = None,
        top_p: Optional[float] = None,
        top_k: Optional[int] = None,
        seed: Optional[int] = None,
        stop: "Optional[Union[str, Sequence[str]]]" = None,
        task_id: Optional[str] = None,
        priority: Optional[Priority] = None,
        timeout_s: Optional[float] = None,
        queue_timeout_s: Optional[float] = None,
        max_attempts: Optional[int] = None,
        requirements: Optional[Mapping[str, Any]] = None,
        idempotency_key: Optional[str] = None,
    ) -> Generation:
        """A streamed ``generate`` task: ``for delta in client.generate(…)``; see :meth:`AsyncClient.generate`."""
        inner = self._call(_value(lambda: self._async.generate(
            model, prompt, messages=messages, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
            top_k=top_k, seed=seed, stop=stop, task_id=task_id, priority=priority, timeout_s=timeout_s,
            queue_timeout_s=queue_timeout_s, max_attempts=max_attempts, requirements=requirements,
            idempotency_key=idempotency_key,
        )))
        return Generation(self, inner)

    def close(self) -> None:
        """Closes the connection and stops the client's thread; tasks still
        waiting raise :class:`~legacygpu.ClientClosed`."""
        if self._closed:
            return
        try:
            self._call(self._async.close(), timeout=15)
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=15)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True) and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)


async def _awaited(aw: Awaitable[T]) -> T:
    return await aw


async def _value(make: Any) -> Any:
    """Runs ``make()`` on the loop thread (the async client is not thread-safe)."""
    return make()
