"""The exceptions the client raises.

Everything derives from :class:`LegacyGpuError`. A task that ended without a
result raises a :class:`TaskError` subclass chosen by how it ended; a request
the coordinator refused raises :class:`Rejected` (or :class:`Busy`); losing the
coordinator for good raises :class:`ConnectionLost`: once the reconnection
budget is spent, at once when reconnecting is off, or when another
connection took this gamer id.

Arguments that are wrong in themselves (a bad type, a value out of range) raise
the built-in ``TypeError`` / ``ValueError`` before anything is sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional

if TYPE_CHECKING:
    from .aio import AsyncTask


class LegacyGpuError(Exception):
    """Base class of every error of this package."""


class ConnectFailed(LegacyGpuError, ConnectionError):
    """The first connection to the coordinator could not be made."""


class NotLeader(ConnectFailed):
    """The coordinator is a standby; ``leader`` is the leader's URL it named
    (None during an election). The client follows it by itself."""

    def __init__(self, message: str, leader: Optional[str] = None) -> None:
        super().__init__(message)
        self.leader = leader


class ConnectionLost(LegacyGpuError, ConnectionError):
    """The coordinator stayed unreachable past the reconnection budget (or
    the connection dropped with ``reconnect=False``, or another connection
    took this gamer id: close code 4000).

    Raised by every handle still waiting when the client gave up.
    """


class ClientClosed(LegacyGpuError):
    """The client was closed while this call or task was still waiting."""


class Unauthorized(LegacyGpuError):
    """No token, or a wrong one (HTTP 401/403 at the upgrade, an
    ``unauthorized`` error, or an API key whose role is too weak)."""

    def __init__(self, message: str, *, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.status = status


class Rejected(LegacyGpuError):
    """The coordinator refused a request (an ``error`` message, or an HTTP error)."""

    def __init__(
        self,
        code: str,
        reason: str,
        *,
        task_id: Optional[str] = None,
        status: Optional[int] = None,
    ) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.task_id = task_id
        #: The HTTP status, for errors of the REST API.
        self.status = status


class Busy(Rejected):
    """The queue is full; try again after :attr:`retry_after_s` seconds."""

    def __init__(
        self,
        reason: str,
        *,
        retry_after_s: float = 1.0,
        task_id: Optional[str] = None,
        status: Optional[int] = None,
    ) -> None:
        super().__init__("busy", reason, task_id=task_id, status=status)
        self.retry_after_s = retry_after_s


class ApiError(Rejected):
    """The REST API answered with its error envelope (see docs/API.md)."""


class AcceptTimeout(LegacyGpuError, TimeoutError):
    """``submit(..., accept_timeout=…)`` waited that long without the
    coordinator's ``task_accepted`` (it is down, or unreachable for now).

    The submission is **not** dropped: the client keeps it under its task id
    and idempotency key, sends it when the connection is back (as for any
    unacknowledged task), and :attr:`task` is its handle — wait on it later,
    or withdraw it with ``task.cancel()``: never sent, it is dropped here
    (its result raises :class:`TaskCancelled`, code ``withdrawn``); perhaps
    sent, a ``cancel_task`` follows it under the same key. Submitting the
    same task id or key again meanwhile gets this same task (nothing is sent
    twice), so a retry cannot make it run twice. Also a built-in
    ``TimeoutError``.
    """

    def __init__(self, task: "AsyncTask", timeout: float) -> None:
        super().__init__(f"task {task.task_id} was not accepted within {timeout:g} s")
        #: The task's handle (an :class:`~legacygpu.AsyncTask`, or a
        #: :class:`~legacygpu.Task` from the blocking client).
        self.task: Any = task
        self.task_id: str = task.task_id
        self.timeout = timeout


class TaskError(LegacyGpuError):
    """A task ended without a result. The subclass says how."""

    def __init__(self, message: Dict[str, Any]) -> None:
        self.task_id: str = str(message.get("task_id", ""))
        #: The cluster-wide id (``t-42``); empty when the coordinator has no record.
        self.id: str = str(message.get("id", ""))
        self.status: str = str(message.get("status", "failed"))
        self.code: str = str(message.get("code", ""))
        self.reason: str = str(message.get("reason", ""))
        self.attempts: int = int(message.get("attempts", 0) or 0)
        #: The whole ``task_error`` message.
        self.message = message
        super().__init__(f"task {self.task_id} {self.status} ({self.code}): {self.reason}")


class TaskFailed(TaskError):
    """The task failed: attempts exhausted, bad input, a non-retryable executor error…"""


class TaskCancelled(TaskError):
    """The task was cancelled."""


class TaskTimedOut(TaskError):
    """The task ran past its ``timeout_s`` or waited past its queue timeout.

    Not to be confused with the built-in ``TimeoutError`` that
    ``handle.result(timeout=…)`` raises when *the caller's* wait ends first.
    """


def task_error(message: Dict[str, Any]) -> TaskError:
    """The exception for a ``task_error`` message."""
    status = message.get("status")
    if status == "cancelled":
        return TaskCancelled(message)
    if status == "timed_out":
        return TaskTimedOut(message)
    return TaskFailed(message)


def refusal(message: Dict[str, Any]) -> LegacyGpuError:
    """The exception for an ``error`` message refusing a request."""
    code = str(message.get("code", ""))
    reason = str(message.get("reason", ""))
    task_id = message.get("task_id")
    if code == "busy":
        retry = message.get("retry_after_s")
        retry_s = float(retry) if isinstance(retry, (int, float)) else 1.0
        return Busy(reason, retry_after_s=retry_s, task_id=task_id)
    if code == "unauthorized":
        return Unauthorized(reason)
    return Rejected(code, reason, task_id=task_id)
