"""The asyncio client: :class:`AsyncClient`, its task handles and LLM streams.

>>> async with AsyncClient("ws://127.0.0.1:8765") as client:   # doctest: +SKIP
...     task = await client.submit("echo", {"hello": "world"})
...     print(await task)
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import ssl as _ssl
import time
from typing import (
    Any,
    AsyncIterator,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
)

from . import _wire, errors
from ._driver import Driver, Options, Outcome, Pending
from .tls import Tls, check_ca_hash, split_token

#: Tasks in flight at once for ``submit_many`` and ``map`` unless told.
DEFAULT_IN_FLIGHT = 256
#: How long ``submit_many`` and ``map`` keep retrying a ``busy`` queue.
DEFAULT_BUSY_RETRY_S = 60.0

#: The default ``silence_timeout_s`` given several coordinator URLs (the
#: coordinators' default ``--lease-ttl``), and given one.
HA_SILENCE_S = 3.0
LONE_SILENCE_S = 15.0


def _spawn(coro: Any) -> "asyncio.Future[Any]":
    """A background job whose failure is read even when nobody awaits it
    (a caller who stopped early must not get 'exception never retrieved')."""
    job: "asyncio.Future[Any]" = asyncio.ensure_future(coro)
    job.add_done_callback(lambda f: f.cancelled() or f.exception())
    return job


def _put(queue: "asyncio.Queue[AsyncTask]", task: "AsyncTask", _: Any) -> None:
    queue.put_nowait(task)


def _credentials(token: Optional[str], ca_hash: Optional[str], other_trust: bool) -> "tuple[Optional[str], Optional[str]]":
    """(the secret to present, the CA pin): a client token ``lgj1-<pin>-<secret>``
    pins its CA and presents only its secret, as in the Rust SDK; a ``ca_hash``
    given beside it must be the same pin."""
    if token is None:
        return None, ca_hash
    pin, secret = split_token(token)
    if pin is None:
        return token, ca_hash
    if other_trust:
        raise ValueError("a client token (lgj1-…) pins the coordinator's CA: give no ssl= or ca_file= with it")
    if ca_hash is not None and check_ca_hash(ca_hash) != pin:
        raise ValueError("ca_hash differs from the CA hash in the client token (lgj1-<CA hash>-<secret>)")
    return secret, pin


def unwrap(outcome: Outcome) -> Any:
    """A task's result, or its failure raised."""
    if isinstance(outcome, errors.LegacyGpuError):
        raise outcome
    if outcome.get("msg_type") == "task_error":
        raise errors.task_error(outcome)
    return outcome.get("result")


class AsyncTask:
    """A submitted task. ``await task`` (or ``await task.result()``) gives its result."""

    def __init__(self, client: "AsyncClient", pending: Pending) -> None:
        self._client = client
        self._pending = pending
        #: The client's id for the task (given, or made by the client).
        self.task_id: str = pending.task_id

    @property
    def id(self) -> str:
        """The cluster-wide id (``t-42``), for the REST API and the CLI
        (empty while the task is not accepted)."""
        return self._pending.id or str(self.accepted.get("id", ""))

    @property
    def accepted(self) -> Dict[str, Any]:
        """The ``task_accepted`` message (``status``; ``existing`` and
        ``waiting_reason`` only when set: read them with ``.get()``); empty
        while the coordinator has not answered (a handle from
        :class:`~legacygpu.AcceptTimeout`). After a reconnect the outcome may
        come before any acknowledgement: this is then the outcome."""
        fut = self._pending.accepted
        value = fut.result() if fut.done() else None
        return value if isinstance(value, dict) else {}

    def done(self) -> bool:
        return self._pending.outcome.done()

    @property
    def outcome(self) -> Optional[Dict[str, Any]]:
        """The final ``task_result``/``task_error`` message, once there is one."""
        if not self.done():
            return None
        value = self._pending.outcome.result()
        return value if isinstance(value, dict) else None

    async def result(self, timeout: Optional[float] = None) -> Any:
        """The task's result. Raises :class:`~legacygpu.TaskFailed`,
        :class:`~legacygpu.TaskCancelled` or :class:`~legacygpu.TaskTimedOut`
        when it ended without one, and ``TimeoutError`` when ``timeout``
        seconds pass first (the task goes on)."""
        try:
            outcome = await asyncio.wait_for(asyncio.shield(self._pending.outcome), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"task {self.task_id} did not finish within {timeout} s") from None
        return unwrap(outcome)

    def __await__(self) -> Any:
        return self.result().__await__()

    async def cancel(self) -> None:
        """Asks for the task to be cancelled; its result then raises
        :class:`~legacygpu.TaskCancelled` (unless the result won the race).
        A task submitted while disconnected and never sent is withdrawn at
        once (code ``withdrawn``). Does nothing once the task has finished."""
        if self.done():
            return
        await self._client._driver_or_raise().cancel(self.task_id)

    async def status(self) -> Dict[str, Any]:
        """Where the task stands: ``{"status", "attempt", "peer_id", "id", …}``."""
        reply = await self._client._driver_or_raise().status(self.task_id)
        if isinstance(reply, errors.LegacyGpuError):
            raise reply
        return reply

    def __repr__(self) -> str:
        return f"<AsyncTask {self.task_id} id={self.id or '?'} done={self.done()}>"


class AsyncClient:
    """A connection to a coordinator as a gamer, with many tasks in flight.

    Connects on ``async with`` (or ``await client.connect()``). Arguments:

    - ``url``: ``ws://HOST:8765`` or ``wss://HOST:8765``; or several,
      comma-separated (the coordinators of one PostgreSQL store): the client
      finds the leader, following a standby's ``not_leader`` answer and
      moving on from one it cannot reach, now and after every drop;
    - ``token``: the credential: the cluster token, an API key, or the
      client token ``lgj1-<CA hash>-<secret>`` that ``cluster start`` prints,
      which also pins the coordinator's CA (as ``ca_hash``; only the secret is
      sent, and only over ``wss://``);
    - ``gamer_id``: reconnecting with the same id delivers the outcomes that
      finished while away (default: a random one);
    - ``ssl`` / ``ca_file`` / ``ca_hash``: TLS trust for ``wss://`` (see
      :mod:`legacygpu.tls`); without any, the system's CAs. With a ``ws://``
      URL they are refused (``ValueError``), as the token would go in clear;
    - ``reconnect``: reconnect and resubmit when the connection drops;
    - ``resubmit_acknowledged``: on reconnecting, send acknowledged tasks
      again as well (under their keys) instead of naming them in ``awaiting``;
    - ``reconnect_max_s``: the longest back-off between attempts;
    - ``give_up_after_s``: raise :class:`~legacygpu.ConnectionLost` in every
      waiting handle after this long without a connection (None: never);
    - ``connect_timeout_s``: how long one connection attempt may take;
    - ``silence_timeout_s``: a connection from which nothing comes for this
      long (pings go out at a third of it) is given up and made anew, so that
      a coordinator frozen with its socket open is left for another URL
      (None: 3 s given several URLs, about when a standby takes a frozen
      leader's lease; 15 s given one, as the Rust SDK does);
    - ``max_frame_bytes``: the coordinator's frame limit (requests over it are
      refused here, with ``ValueError``).
    """

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
        max_frame_bytes: int = _wire.DEFAULT_MAX_FRAME_BYTES,
    ) -> None:
        if not isinstance(url, str) or not all(
            u.strip().startswith(("ws://", "wss://")) and len(u.strip()) > 6 for u in url.split(",")
        ):
            raise ValueError(f"url must be a ws:// or wss:// URL (or several, comma-separated), got {url!r}")
        if token is not None and (not isinstance(token, str) or not token):
            raise TypeError("token must be a non-empty str")
        if silence_timeout_s is None:
            several = len({u.strip() for u in url.split(",")}) > 1
            silence_timeout_s = HA_SILENCE_S if several else LONE_SILENCE_S
        for name, value in (
            ("reconnect_max_s", reconnect_max_s),
            ("connect_timeout_s", connect_timeout_s),
            ("silence_timeout_s", silence_timeout_s),
        ):
            _wire.check_seconds(name, value)
        if give_up_after_s is not None:
            _wire.check_seconds("give_up_after_s", give_up_after_s)
        _wire.check_int("max_frame_bytes", max_frame_bytes, 1024)
        self.url = url
        secret, ca_hash = _credentials(token, ca_hash, ssl is not None or ca_file is not None)
        self._tls = Tls(ssl, ca_file, ca_hash, urls=url.split(","))
        self._options = Options(
            gamer_id=_wire.check_id("gamer_id", gamer_id) if gamer_id is not None else f"py-{secrets.token_hex(6)}",
            token=secret,
            reconnect=bool(reconnect),
            resubmit_acknowledged=bool(resubmit_acknowledged),
            reconnect_max_s=float(reconnect_max_s),
            connect_timeout_s=float(connect_timeout_s),
            give_up_after_s=None if give_up_after_s is None else float(give_up_after_s),
            max_frame_bytes=max_frame_bytes,
            silence_timeout_s=float(silence_timeout_s),
        )
        self._driver: Optional[Driver] = None

    @property
    def gamer_id(self) -> str:
        return self._options.gamer_id

    @property
    def connected(self) -> bool:
        """Whether a connection to a coordinator is up now (False while the
        client reconnects, and once it gave up or was closed)."""
        d = self._driver
        return d is not None and d.link is not None and d.failed is None and not d.closing

    @property
    def stats(self) -> Dict[str, int]:
        """What the client saw on the wire: ``accepted`` (tasks acknowledged),
        ``outcomes`` (first deliveries and
        repeats), ``duplicates`` (repeats dropped), ``reconnects``, ``resubmitted``
        (awaited tasks the coordinator had forgotten, submitted again)."""
        return dict(self._driver.stats) if self._driver else {}

    async def connect(self) -> "AsyncClient":
        if self._driver is None:
            driver = Driver(self.url, self._options, self._tls)
            await driver.start()
            self._driver = driver
        return self

    async def close(self) -> None:
        """Closes the connection; tasks still waiting raise :class:`~legacygpu.ClientClosed`."""
        if self._driver is not None:
            await self._driver.close()

    async def __aenter__(self) -> "AsyncClient":
        return await self.connect()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def _driver_or_raise(self) -> Driver:
        if self._driver is None:
            raise errors.ClientClosed("the client is not connected: use `async with` or `await client.connect()`")
        self._driver.check_usable()
        return self._driver

    # ---- submitting ----------------------------------------------------

    def _request(self, task_type: Any, data: Any, stream: bool = False, **opts: Any) -> "tuple[str, str]":
        """Checks arguments and encodes the request: (task id, frame)."""
        driver = self._driver_or_raise()
        task_id = opts.pop("task_id", None)
        key = opts.get("idempotency_key")
        # The coordinator answers a resubmission under the original task's id,
        # so a key and a different task id could never be matched up.
        if key is not None and task_id is not None and key != task_id:
            raise ValueError("give task_id or idempotency_key, or the same value for both: "
                             "a resubmitted key is answered under its first task id")
        if task_id is None:
            task_id = key if key is not None else driver.new_task_id()
        msg = _wire.task_request(task_type, data, task_id=task_id, stream=stream, **opts)
        return task_id, _wire.frame(msg, self._options.max_frame_bytes)

    async def _accepted(self, pending: Pending, accept_timeout: Optional[float] = None) -> AsyncTask:
        task = AsyncTask(self, pending)
        if accept_timeout is not None and not pending.accepted.done():
            try:
                await asyncio.wait_for(asyncio.shield(pending.accepted), accept_timeout)
            except asyncio.TimeoutError:
                raise errors.AcceptTimeout(task, accept_timeout) from None
        value = await pending.accepted
        if isinstance(value, errors.LegacyGpuError):
            raise value
        return task

    async def submit(
        self,
        task_type: str,
        data: Any = None,
        *,
        task_id: Optional[str] = None,
        priority: Optional[_wire.Priority] = None,
        timeout_s: Optional[float] = None,
        queue_timeout_s: Optional[float] = None,
        max_attempts: Optional[int] = None,
        requirements: Optional[Mapping[str, Any]] = None,
        idempotency_key: Optional[str] = None,
        accept_timeout: Optional[float] = None,
    ) -> AsyncTask:
        """Submits one task and waits for ``task_accepted`` (with the store on,
        the task is then durable). Raises :class:`~legacygpu.Busy` when the
        queue is full and :class:`~legacygpu.Rejected` for other refusals.

        ``accept_timeout``: wait at most this many seconds for the acceptance
        (default: as long as the client keeps reconnecting), then raise
        :class:`~legacygpu.AcceptTimeout` — a ``TimeoutError`` whose ``task``
        is the handle of the submission, which the client keeps and sends
        when it can, under the same key (``task.cancel()`` withdraws it)."""
        if accept_timeout is not None:
            _wire.check_seconds("accept_timeout", accept_timeout)
        tid, frame = self._request(
            task_type, data, task_id=task_id, priority=priority, timeout_s=timeout_s,
            queue_timeout_s=queue_timeout_s, max_attempts=max_attempts,
            requirements=requirements, idempotency_key=idempotency_key,
        )
        return await self._accepted(self._driver_or_raise().start_task(tid, frame), accept_timeout)

    async def run(
        self,
        task_type: str,
        data: Any = None,
        *,
        task_id: Optional[str] = None,
        priority: Optional[_wire.Priority] = None,
        timeout_s: Optional[float] = None,
        queue_timeout_s: Optional[float] = None,
        max_attempts: Optional[int] = None,
        requirements: Optional[Mapping[str, Any]] = None,
        idempotency_key: Optional[str] = None,
        accept_timeout: Optional[float] = None,
    ) -> Any:
        """Submits a task and waits for its result."""
        task = await self.submit(
            task_type, data, task_id=task_id, priority=priority, timeout_s=timeout_s,
            queue_timeout_s=queue_timeout_s, max_attempts=max_attempts, requirements=requirements,
            idempotency_key=idempotency_key, accept_timeout=accept_timeout,
        )
        return await task

    async def submit_many(
        self,
        task_type: str,
        inputs: Iterable[Any],
        *,
        in_flight: int = DEFAULT_IN_FLIGHT,
        busy_retry_s: float = DEFAULT_BUSY_RETRY_S,
        priority: Optional[_wire.Priority] = None,
        timeout_s: Optional[float] = None,
        queue_timeout_s: Optional[float] = None,
        max_attempts: Optional[int] = None,
        requirements: Optional[Mapping[str, Any]] = None,
    ) -> List[AsyncTask]:
        """Submits one task per input, pipelined: up to ``in_flight`` tasks
        unfinished at once, without waiting for each acknowledgement. Returns
        the handles in input order once every task is accepted (the last ones
        may still run). Every input is checked before anything is sent; a
        ``busy`` queue is retried for up to ``busy_retry_s`` seconds. Each
        task gets a task id and key of its own (use :meth:`submit` for yours)."""
        frames = self._frames(task_type, inputs, dict(
            priority=priority, timeout_s=timeout_s, queue_timeout_s=queue_timeout_s,
            max_attempts=max_attempts, requirements=requirements))
        sem = asyncio.Semaphore(_wire.check_int("in_flight", in_flight, 1))
        jobs = []
        for tid, frame in frames:
            await sem.acquire()
            jobs.append(_spawn(self._submit_one(tid, frame, sem, busy_retry_s)))
        return list(await asyncio.gather(*jobs))

    def _frames(self, task_type: Any, inputs: Iterable[Any], opts: Dict[str, Any]) -> List["tuple[str, str]"]:
        if isinstance(inputs, (str, bytes, Mapping)) or not isinstance(inputs, Iterable):
            raise TypeError("inputs must be an iterable of task data (a list, a generator…)")
        return [self._request(task_type, data, **opts) for data in inputs]

    async def _submit_one(self, tid: str, frame: str, sem: asyncio.Semaphore, busy_retry_s: float) -> AsyncTask:
        deadline = time.monotonic() + busy_retry_s
        while True:
            pending = self._driver_or_raise().start_task(tid, frame)
            value = await pending.accepted
            if isinstance(value, errors.Busy) and time.monotonic() + value.retry_after_s < deadline:
                await asyncio.sleep(value.retry_after_s)
                continue
            if isinstance(value, errors.LegacyGpuError):
                sem.release()
                raise value
            pending.outcome.add_done_callback(lambda _: sem.release())
            return AsyncTask(self, pending)

    async def as_completed(self, tasks: Iterable[AsyncTask], timeout: Optional[float] = None) -> AsyncIterator[AsyncTask]:
        """Yields the handles as their tasks finish (whichever way).
        Raises ``TimeoutError`` when ``timeout`` seconds pass first."""
        tasks = list(tasks)
        queue: "asyncio.Queue[AsyncTask]" = asyncio.Queue()
        for t in tasks:
            t._pending.outcome.add_done_callback(functools.partial(_put, queue, t))
        deadline = None if timeout is None else time.monotonic() + timeout
        for _ in tasks:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                yield await asyncio.wait_for(queue.get(), left)
            except asyncio.TimeoutError:
                raise TimeoutError(f"not every task finished within {timeout} s") from None

    async def map(
        self,
        task_type: str,
        inputs: Iterable[Any],
        *,
        in_flight: int = DEFAULT_IN_FLIGHT,
        busy_retry_s: float = DEFAULT_BUSY_RETRY_S,
        priority: Optional[_wire.Priority] = None,
        timeout_s: Optional[float] = None,
        queue_timeout_s: Optional[float] = None,
        max_attempts: Optional[int] = None,
        requirements: Optional[Mapping[str, Any]] = None,
    ) -> AsyncIterator[Any]:
        """Yields each input's result in input order, with up to ``in_flight``
        tasks running ahead; a task that ended without a result raises its
        :class:`~legacygpu.TaskError` when its turn comes."""
        frames = self._frames(task_type, inputs, dict(
            priority=priority, timeout_s=timeout_s, queue_timeout_s=queue_timeout_s,
            max_attempts=max_attempts, requirements=requirements))
        window = _wire.check_int("in_flight", in_flight, 1)
        sem = asyncio.Semaphore(window)
        jobs: "List[asyncio.Future[AsyncTask]]" = []
        for tid, frame in frames:
            await sem.acquire()
            jobs.append(_spawn(self._submit_one(tid, frame, sem, busy_retry_s)))
            if len(jobs) >= window:
                yield await (await jobs.pop(0))
        for job in jobs:
            yield await (await job)

    # ---- LLM streaming ---------------------------------------------------

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
        stop: "Optional[str | Sequence[str]]" = None,
        task_id: Optional[str] = None,
        priority: Optional[_wire.Priority] = None,
        timeout_s: Optional[float] = None,
        queue_timeout_s: Optional[float] = None,
        max_attempts: Optional[int] = None,
        requirements: Optional[Mapping[str, Any]] = None,
        idempotency_key: Optional[str] = None,
    ) -> "AsyncGeneration":
        """A streamed ``generate`` task: ``async for delta in client.generate(…)``
        yields the text as the worker produces it; afterwards ``.result`` holds
        the final result (``text``, ``finish_reason``, token counts…). Arguments
        are checked now; the task is submitted when iteration starts."""
        from .inputs import generate as generate_input

        data = generate_input(model, prompt, messages=messages, max_tokens=max_tokens, temperature=temperature,
                              top_p=top_p, top_k=top_k, seed=seed, stop=stop)
        tid, frame = self._request(
            "generate", data, stream=True, task_id=task_id, priority=priority, timeout_s=timeout_s,
            queue_timeout_s=queue_timeout_s, max_attempts=max_attempts, requirements=requirements,
            idempotency_key=idempotency_key,
        )
        return AsyncGeneration(self, tid, frame)


class AsyncGeneration:
    """The text of a streamed ``generate`` task, delta by delta.

    Deltas arrive best-effort (``task_progress``); the final result's text is
    authoritative. When a delta was dropped (a gap in ``seq``), nothing more is
    yielded from the stream and the missing tail is taken from the final text,
    so the deltas always add up to ``result["text"]``.
    """

    def __init__(self, client: AsyncClient, task_id: str, frame: str) -> None:
        self._client = client
        self.task_id = task_id
        self._frame = frame
        self._started = False
        self.task: Optional[AsyncTask] = None
        #: The final result, once the iteration has ended.
        self.result: Optional[Dict[str, Any]] = None
        #: True when some deltas were dropped and the tail came from the final text.
        self.gap = False

    def __aiter__(self) -> AsyncIterator[str]:
        if self._started:
            raise RuntimeError("a generation can be iterated once")
        self._started = True
        return self._deltas()

    async def _deltas(self) -> AsyncIterator[str]:
        pending = self._client._driver_or_raise().start_task(self.task_id, self._frame, stream=True)
        self.task = await self._client._accepted(pending)
        queue = pending.progress
        assert queue is not None  # start_task made one: stream=True
        sent: List[str] = []
        expected, attempt = 0, None
        while True:
            item = await queue.get()
            if item is None:
                break
            if self.gap:
                continue
            if item.get("seq") != expected or (attempt is not None and item.get("attempt") != attempt):
                self.gap = True
                continue
            expected += 1
            attempt = item.get("attempt")
            text = item.get("text")
            if isinstance(text, str) and text:
                sent.append(text)
                yield text
        result = unwrap(await pending.outcome)
        self.result = result if isinstance(result, dict) else {"text": result}
        final = self.result.get("text")
        so_far = "".join(sent)
        if isinstance(final, str) and len(final) > len(so_far) and final.startswith(so_far):
            yield final[len(so_far):]

    async def text(self) -> str:
        """Consumes the stream and returns the whole text."""
        return "".join([d async for d in self])
