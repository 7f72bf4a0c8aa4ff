"""The connection behind a client: one WebSocket as a gamer, many tasks in flight.

The same guarantees as the Rust SDK (crates/client/src/conn.rs), by the same
protocol:

- every task has a task id (made here when the caller gives none) and an
  idempotency key (its task id unless given);
- when the connection drops, the driver reconnects with exponential back-off
  and jitter under the same gamer id; tasks never acknowledged are sent again
  under their keys (the coordinator answers with the original task when it
  had it), and acknowledged tasks still waiting are named in
  ``register_gamer.awaiting`` (their outcome is sent again if it was lost with
  the old connection). An awaited task the coordinator has no record of (no
  store, or its result expired) is answered ``unknown_task``: the driver then
  submits it again under its key, so no handle waits for ever;
- each task's outcome resolves its handle exactly once; repeats are counted
  and dropped.

Outcomes are kept as the raw wire message (or an exception instance for
local failures) so that an outcome nobody reads never warns.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import random
import secrets
import time
from dataclasses import dataclass
from typing import Any, Deque, Dict, List, Optional, Set, Union

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from . import errors
from .tls import Tls

log = logging.getLogger("legacygpu")


class _Redact(logging.Filter):
    """websockets logs headers and frames at debug level: never the token."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        redacted = text.replace(self.secret, "<redacted>")
        # websockets shortens long frames to their head and tail ("…" between),
        # so a frame carrying the token may show only its start or its end.
        for n in range(len(self.secret) - 1, _SHOWN_PIECE - 1, -1):
            for piece in (self.secret[:n], self.secret[-n:]):
                if piece in redacted:
                    redacted = redacted.replace(piece, "<redacted>")
        if redacted != text:
            record.msg, record.args = redacted, ()
        return True


#: The shortest start or end of the token that is redacted (shorter ones are
#: too little of it to matter, and too likely to match other text).
_SHOWN_PIECE = 6


def _ws_logger(token: Optional[str]) -> logging.Logger:
    """The logger handed to websockets (``legacygpu.websockets``), with the token redacted."""
    logger = logging.getLogger("legacygpu.websockets")
    if token and not any(isinstance(f, _Redact) and f.secret == token for f in logger.filters):
        logger.addFilter(_Redact(token))
    return logger

Outcome = Union[Dict[str, Any], errors.LegacyGpuError]

#: What a failed connection attempt raises (ValueError: a garbled answer).
CONNECT_ERRORS = (OSError, asyncio.TimeoutError, WebSocketException, ValueError, errors.ConnectFailed)
#: Close codes after which reconnecting makes no sense.
CLOSE_UNAUTHORIZED = 1008
CLOSE_REPLACED = 4000
#: No close frame: the connection dropped, or a keepalive ping timed out.
CLOSE_ABNORMAL = 1006
#: How often an awaited task the coordinator forgot is submitted again.
MAX_RESUBMITS = 3
#: Outcomes kept after delivery, for a key resubmitted on the same connection
#: (the coordinator does not send an outcome twice to one connection).
KEEP_FINISHED = 1024
KEEP_FINISHED_IDS = 100_000
TERMINAL = ("completed", "failed", "cancelled", "timed_out")


@dataclass
class Options:
    gamer_id: str
    token: Optional[str]
    reconnect: bool
    resubmit_acknowledged: bool
    reconnect_max_s: float
    connect_timeout_s: float
    #: Give up (ConnectionLost) after this long without a connection; None: never.
    give_up_after_s: Optional[float]
    max_frame_bytes: int
    #: A connection silent this long (no answer to the pings sent at a
    #: third of it) is given up and made anew, as the Rust SDK does: a
    #: coordinator frozen with its socket open (SIGSTOP) is left.
    silence_timeout_s: float


class Pending:
    """A task waiting for its outcome."""

    __slots__ = ("seq", "task_id", "frame", "accepted", "outcome", "acked", "sent", "id", "progress", "cancel",
                 "resubmits")

    def __init__(self, seq: int, task_id: str, frame: str, loop: asyncio.AbstractEventLoop, stream: bool) -> None:
        self.seq = seq
        self.task_id = task_id
        self.frame = frame
        self.accepted: "asyncio.Future[Dict[str, Any]]" = loop.create_future()
        self.outcome: "asyncio.Future[Outcome]" = loop.create_future()
        self.acked = False
        #: Whether the request was ever handed to a connection (if not, the
        #: coordinator cannot have it, and a cancel withdraws it here).
        self.sent = False
        self.id = ""
        self.progress: "Optional[asyncio.Queue[Optional[Dict[str, Any]]]]" = asyncio.Queue() if stream else None
        self.cancel = False
        self.resubmits = 0


def _settle(fut: "asyncio.Future[Any]", value: Any) -> None:
    """Resolves once. Failures are results too (exception instances), raised
    by whoever reads them: a future nobody reads never warns."""
    if not fut.done():
        fut.set_result(value)


class Link:
    """One live connection and the frames waiting to go out on it, written in
    order by one writer task (a frame lost with the connection is sent again
    after the reconnection, from ``pending``)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.outbox: Deque[str] = collections.deque()
        self.wake = asyncio.Event()
        self.writer = asyncio.ensure_future(self._write())

    def send(self, frame: str) -> None:
        self.outbox.append(frame)
        self.wake.set()

    async def _write(self) -> None:
        try:
            while True:
                while self.outbox:
                    await self.ws.send(self.outbox.popleft())
                self.wake.clear()
                await self.wake.wait()
        except ConnectionClosed:
            pass  # the reader sees the close and reconnects

    def stop(self) -> None:
        self.writer.cancel()


class Driver:
    def __init__(self, url: str, options: Options, tls: Tls) -> None:
        # The coordinators, which to try next, where a standby said the
        # leader is (tried first), and those that failed since the last good
        # connection (not followed when named); as proto::Endpoints does in Rust.
        self.urls = list(dict.fromkeys(u.strip() for u in url.split(",")))
        self.index = 0
        self.redirect: Optional[str] = None
        self.suspect: Set[str] = set()
        self.options = options
        self.tls = tls
        self.loop = asyncio.get_running_loop()
        self.link: Optional[Link] = None
        self.pending: Dict[str, Pending] = {}
        self.statuses: Dict[str, Deque["asyncio.Future[Dict[str, Any]]"]] = {}
        # Outcomes delivered (the last KEEP_FINISHED), and on which connection
        # (the last KEEP_FINISHED_IDS task ids), for _finished_before.
        self.finished: "collections.OrderedDict[str, Dict[str, Any]]" = collections.OrderedDict()
        self.finished_on: "collections.OrderedDict[str, int]" = collections.OrderedDict()
        self.generation = 0
        # A random prefix for task ids made here, so that a restarted client
        # with the same gamer id never reuses one.
        self.session = secrets.token_hex(4)
        self.next = 0
        self.seq = 0
        self.closing = False
        self.failed: Optional[errors.LegacyGpuError] = None
        self.reader: Optional["asyncio.Task[None]"] = None
        self.stats = {"accepted": 0, "outcomes": 0, "duplicates": 0, "reconnects": 0, "resubmitted": 0}

    # ---- which coordinator ---------------------------------------------

    @property
    def url(self) -> str:
        """The coordinator to try now."""
        return self.redirect or self.urls[self.index]

    def _failed(self) -> None:
        """The current URL could not be reached, or went silent: the next
        one is tried, and standbys naming this one are not followed until a
        connection succeeds (a frozen leader holds its lease for a while)."""
        self.suspect.add(self.url)
        self._move_on()

    def _move_on(self) -> None:
        """The next URL that has not failed since the last good connection
        (any next one when all have)."""
        if self.redirect is not None:
            self.redirect = None
            return
        n = len(self.urls)
        fresh = [i for i in ((self.index + step) % n for step in range(1, n + 1)) if self.urls[i] not in self.suspect]
        self.index = fresh[0] if fresh else (self.index + 1) % n

    def _not_leader(self, leader: Optional[str]) -> None:
        """A standby answered, naming ``leader`` (or nobody)."""
        named = isinstance(leader, str) and leader.startswith(("ws://", "wss://"))
        if named and leader != self.url and leader not in self.suspect:
            self.redirect = leader
        else:
            self._move_on()

    def _connected(self) -> None:
        self.suspect.clear()
        if self.redirect in self.urls:
            self.index = self.urls.index(self.redirect)
            self.redirect = None

    # ---- connecting ----------------------------------------------------

    async def start(self) -> None:
        last: Any = None
        for _ in range(len(self.urls) * 4 + 2):
            try:
                self.link = self._link(await self._open([]))
                break
            except errors.Unauthorized:
                raise
            except errors.NotLeader as e:
                last = e
                self._not_leader(e.leader)
                if e.leader is None:
                    await asyncio.sleep(0.2)  # an election is on
            except CONNECT_ERRORS as e:
                last = e
                self._failed()
                if len(self.urls) == 1:
                    break
        if self.link is None:
            raise errors.ConnectFailed(f"cannot connect to {','.join(self.urls)}: {_describe(last)}") from None
        self._connected()
        self.reader = asyncio.ensure_future(self._run())

    async def _open(self, awaiting: List[str]) -> ClientConnection:
        """Connects and registers as the gamer; raises Unauthorized when refused."""
        timeout = self.options.connect_timeout_s
        ctx = await self.tls.context_for(self.url, timeout)
        headers = {"Authorization": f"Bearer {self.options.token}"} if self.options.token else None
        try:
            ws = await connect(
                self.url,
                additional_headers=headers,
                ssl=ctx,
                compression=None,
                proxy=None,
                open_timeout=timeout,
                ping_interval=self.options.silence_timeout_s / 3,
                ping_timeout=self.options.silence_timeout_s * 2 / 3,
                # A silent peer will not finish a closing handshake either.
                close_timeout=min(self.options.silence_timeout_s / 3, 5.0),
                max_size=None,
                max_queue=4096,
                write_limit=1 << 20,
                user_agent_header="legacygpu-python",
                logger=_ws_logger(self.options.token),
            )
        except InvalidStatus as e:
            status = e.response.status_code
            body = e.response.body.decode("utf-8", "replace").strip() if e.response.body else ""
            if status in (401, 403):
                raise errors.Unauthorized(f"{status}: {body}", status=status) from None
            raise errors.ConnectFailed(f"HTTP {status}: {body}") from None
        try:
            register: Dict[str, Any] = {"msg_type": "register_gamer", "gamer_id": self.options.gamer_id}
            if self.options.token:
                register["token"] = self.options.token
            if awaiting:
                register["awaiting"] = awaiting
            await ws.send(json.dumps(register))
            await asyncio.wait_for(self._await_ack(ws), timeout)
        except BaseException:
            await ws.close()
            raise
        return ws

    async def _await_ack(self, ws: ClientConnection) -> None:
        try:
            async for text in ws:
                msg = json.loads(text)
                kind = msg.get("msg_type") if isinstance(msg, dict) else None
                if kind == "registration_ack":
                    return
                if kind == "error" and msg.get("code") == "not_leader":
                    leader = msg.get("leader")
                    raise errors.NotLeader(f"{self.url} is a standby coordinator", leader if isinstance(leader, str) else None)
                if kind == "error":
                    err = errors.refusal(msg)
                    if isinstance(err, errors.Unauthorized):
                        raise err
                    raise errors.ConnectFailed(f"registration refused: {err}")
        except ConnectionClosed as e:
            if e.rcvd is not None and e.rcvd.code == CLOSE_UNAUTHORIZED:
                raise errors.Unauthorized(f"registration refused: {e.rcvd.reason}") from None
            raise
        raise errors.ConnectFailed("the connection closed before the registration was acknowledged")

    def _link(self, ws: ClientConnection) -> Link:
        self.generation += 1
        return Link(ws)

    # ---- the reader ----------------------------------------------------

    async def _run(self) -> None:
        while True:
            link = self.link
            assert link is not None  # set before the reader starts and after each reconnect
            ws = link.ws
            close_code: Optional[int] = None
            heard = time.monotonic()
            try:
                async for text in ws:
                    heard = time.monotonic()
                    if isinstance(text, str):
                        self._on_frame(text)
            except ConnectionClosed:
                pass
            close_code = ws.close_code
            # No close frame, after silence as long as the ping timeout: the
            # coordinator is frozen (its socket open), not just restarted.
            silent = close_code in (None, CLOSE_ABNORMAL) and (
                time.monotonic() - heard >= self.options.silence_timeout_s * 2 / 3)
            link.stop()
            self.link = None
            if self.closing:
                return
            if not await self._reconnect(close_code, silent):
                return

    def _on_frame(self, text: str) -> None:
        try:
            msg = json.loads(text)
            if isinstance(msg, dict):
                self._on_message(msg)
        except Exception:  # one bad message must not stop the reader
            log.exception("legacygpu: cannot handle a message from the coordinator: %.200s", text)

    def _on_message(self, msg: Dict[str, Any]) -> None:
        kind = msg.get("msg_type")
        if kind == "task_result" or kind == "task_error":
            self._finish(msg)
        elif kind == "task_progress":
            p = self.pending.get(msg.get("task_id", ""))
            if p is not None and p.progress is not None:
                p.progress.put_nowait(msg)
        elif kind == "task_accepted":
            p = self.pending.get(msg.get("task_id", ""))
            if p is not None:
                if not p.acked and not p.accepted.done():
                    self.stats["accepted"] += 1
                p.acked = True
                p.id = str(msg.get("id", ""))
                _settle(p.accepted, msg)
                if msg.get("existing") and msg.get("status") in TERMINAL:
                    self._finished_before(p)
        elif kind == "task_status":
            waiters = self.statuses.get(msg.get("task_id", ""))
            if waiters:
                _settle(waiters.popleft(), msg)
        elif kind == "error":
            self._on_error(msg)
        elif kind == "shutdown":
            log.info("legacygpu: the coordinator is shutting down: %s", msg.get("reason"))

    def _finish(self, msg: Dict[str, Any]) -> None:
        """Resolves a task once; a second delivery finds nothing."""
        self.stats["outcomes"] += 1
        task_id = msg.get("task_id", "")
        p = self.pending.get(task_id)
        if p is None:
            self.stats["duplicates"] += 1
            return
        if msg.get("msg_type") == "task_error" and msg.get("code") == "unknown_task" and p.resubmits < MAX_RESUBMITS:
            # The coordinator has no record of an awaited task: run it again
            # under its key rather than leave the caller with a lost task.
            p.resubmits += 1
            p.acked = False
            self.stats["resubmitted"] += 1
            self._send_soon(p.frame)
            return
        del self.pending[task_id]
        self.finished[task_id] = msg
        self.finished.move_to_end(task_id)
        if len(self.finished) > KEEP_FINISHED:
            self.finished.popitem(last=False)
        self.finished_on[task_id] = self.generation
        self.finished_on.move_to_end(task_id)
        if len(self.finished_on) > KEEP_FINISHED_IDS:
            self.finished_on.popitem(last=False)
        if p.progress is not None:
            p.progress.put_nowait(None)
        _settle(p.accepted, msg)
        _settle(p.outcome, msg)

    def _finished_before(self, p: Pending) -> None:
        """A key resubmitted after its task finished and its outcome came on
        this connection: the coordinator does not send it again, so the
        outcome comes from what this client kept. (An outcome delivered on an
        earlier connection, or never, is sent again: wait for it.)"""
        if self.finished_on.get(p.task_id) != self.generation:
            return
        kept = self.finished.get(p.task_id)
        if kept is None or str(kept.get("id", p.id)) != p.id:
            kept = {"msg_type": "task_error", "task_id": p.task_id, "id": p.id, "status": "failed",
                    "code": "outcome_not_kept",
                    "reason": f"task {p.id} finished earlier on this connection and its outcome is no longer kept "
                              f"(the last {KEEP_FINISHED} are); read it with the REST API"}
        del self.pending[p.task_id]
        if p.progress is not None:
            p.progress.put_nowait(None)
        _settle(p.outcome, kept)

    def _on_error(self, msg: Dict[str, Any]) -> None:
        task_id = msg.get("task_id") or ""
        reply_to = msg.get("in_reply_to")
        if reply_to == "task_request":
            p = self.pending.get(task_id)
            if p is not None and not p.acked:
                del self.pending[task_id]
                err = errors.refusal(msg)
                _settle(p.accepted, err)
                _settle(p.outcome, err)
                if p.progress is not None:
                    p.progress.put_nowait(None)
                return
        elif reply_to == "task_status":
            waiters = self.statuses.get(task_id)
            if waiters:
                _settle(waiters.popleft(), errors.refusal(msg))
                return
        elif reply_to == "cancel_task":
            return  # the task's outcome (finished first, or unknown) says the rest
        log.warning("legacygpu: the coordinator refused a message: %s: %s", msg.get("code"), msg.get("reason"))

    # ---- requests ------------------------------------------------------

    def check_usable(self) -> None:
        if self.failed is not None:
            raise self.failed
        if self.closing:
            raise errors.ClientClosed("the client is closed")

    def new_task_id(self) -> str:
        self.next += 1
        return f"{self.session}-{self.next}"

    def start_task(self, task_id: str, frame: str, stream: bool = False) -> Pending:
        """Registers a task and sends its request; the acceptance comes on ``accepted``.

        The same task id (key) again while its task is still pending here
        gets that task, as the coordinator answers a resubmitted key: nothing
        is sent twice (a retry after :class:`~legacygpu.AcceptTimeout`)."""
        self.check_usable()
        kept = self.pending.get(task_id)
        if kept is not None:
            if stream or kept.progress is not None:
                raise ValueError(f"task_id {task_id!r} is already in flight on this client as a streamed task")
            return kept
        self.seq += 1
        p = Pending(self.seq, task_id, frame, self.loop, stream)
        self.pending[task_id] = p
        p.sent = self.link is not None
        self._send_soon(frame)
        return p

    async def cancel(self, task_id: str) -> None:
        p = self.pending.get(task_id)
        if p is None:
            return  # already resolved
        if not p.sent:
            # Never handed to any connection (submitted while disconnected):
            # the coordinator cannot have it, so it is withdrawn here.
            del self.pending[task_id]
            withdrawn = {"msg_type": "task_error", "task_id": task_id, "id": "", "status": "cancelled",
                         "code": "withdrawn", "reason": "cancelled before it was sent to the coordinator",
                         "attempts": 0}
            if p.progress is not None:
                p.progress.put_nowait(None)
            _settle(p.accepted, withdrawn)
            _settle(p.outcome, withdrawn)
            return
        p.cancel = True
        self._send_soon(json.dumps({"msg_type": "cancel_task", "task_id": task_id}))

    async def status(self, task_id: str) -> Dict[str, Any]:
        self.check_usable()
        fut: "asyncio.Future[Dict[str, Any]]" = self.loop.create_future()
        self.statuses.setdefault(task_id, collections.deque()).append(fut)
        self._send_soon(_status_query(task_id))
        return await fut

    def _send_soon(self, frame: str) -> None:
        """Queues a frame on the live connection; while there is none, what
        matters is sent after the reconnection (from ``pending``)."""
        if self.link is not None:
            self.link.send(frame)

    # ---- reconnecting --------------------------------------------------

    async def _reconnect(self, close_code: Optional[int], silent: bool = False) -> bool:
        if close_code == CLOSE_UNAUTHORIZED:
            return self._give_up(errors.Unauthorized("the coordinator closed the connection: unauthorized"))
        if close_code == CLOSE_REPLACED:
            return self._give_up(errors.ConnectionLost(f"replaced by another connection with gamer id {self.options.gamer_id!r}"))
        if not self.options.reconnect:
            return self._give_up(errors.ConnectionLost("the connection to the coordinator closed (reconnect is off)"))
        if silent and len(self.urls) > 1:
            # Frozen: another coordinator first (one that dropped is tried
            # again first: it may just have restarted).
            self._failed()
        lost_at = time.monotonic()
        wait = 0.05
        last: Any = "closed"
        while not self.closing:
            await asyncio.sleep(wait * (0.5 + 0.5 * random.random()))
            budget = self.options.give_up_after_s
            if budget is not None and time.monotonic() - lost_at > budget:
                return self._give_up(errors.ConnectionLost(f"no connection to {self.url} for {budget:g} s (last error: {_describe(last)})"))
            try:
                ws = await self._open(self._awaiting())
            except errors.Unauthorized as e:
                return self._give_up(e)
            except errors.NotLeader as e:
                # An election, or the leader elsewhere: soon again.
                last = e
                self._not_leader(e.leader)
                wait = 0.1
                continue
            except CONNECT_ERRORS as e:
                last = e
                self._failed()
                wait = min(wait * 2, self.options.reconnect_max_s)
                continue
            self._connected()
            if self.closing:
                await ws.close()
                return False
            self.link = self._link(ws)
            self.stats["reconnects"] += 1
            log.info("legacygpu: reconnected as %s; %d task(s) pending", self.options.gamer_id, len(self.pending))
            self._after_reconnect(self.link)
            return True
        return False

    def _awaiting(self) -> List[str]:
        if self.options.resubmit_acknowledged:
            return []
        return [p.task_id for p in self.pending.values() if p.acked]

    def _after_reconnect(self, link: Link) -> None:
        """Sends again, oldest first: unacknowledged requests (and, when asked,
        the acknowledged ones too), pending cancels and status queries."""
        every = self.options.resubmit_acknowledged
        resend = [p for p in sorted(self.pending.values(), key=lambda p: p.seq) if every or not p.acked]
        for p in resend:
            p.sent = True
        frames = [p.frame for p in resend]
        frames += [json.dumps({"msg_type": "cancel_task", "task_id": p.task_id}) for p in self.pending.values() if p.cancel]
        frames += [_status_query(t) for t, waiters in self.statuses.items() for _ in waiters]
        for f in frames:
            link.send(f)

    def _give_up(self, err: errors.LegacyGpuError) -> bool:
        self.failed = err
        self._fail_all(err)
        return False

    def _fail_all(self, err: errors.LegacyGpuError) -> None:
        for p in self.pending.values():
            _settle(p.accepted, err)
            _settle(p.outcome, err)
            if p.progress is not None:
                p.progress.put_nowait(None)
        self.pending.clear()
        for waiters in self.statuses.values():
            for fut in waiters:
                _settle(fut, err)
        self.statuses.clear()

    async def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        link = self.link
        if link is not None:
            link.stop()
            await link.ws.close()
        if self.reader is not None:
            self.reader.cancel()
            try:
                await self.reader
            except (asyncio.CancelledError, Exception):
                pass
        self._fail_all(errors.ClientClosed("the client was closed before the task finished"))


def _status_query(task_id: str) -> str:
    return json.dumps({"msg_type": "task_status", "task_id": task_id})


def _describe(e: Any) -> str:
    if isinstance(e, asyncio.TimeoutError):
        return "timed out"
    return str(e) or type(e).__name__
