"""legacygpu: a Python client for a legacygpu compute cluster.

- :class:`Client` (blocking) and :class:`AsyncClient` (asyncio) speak the
  coordinator's WebSocket protocol (docs/PROTOCOL.md) as a gamer: many tasks
  in flight on one connection, reconnection with back-off, idempotent
  resubmission, each handle resolved exactly once.
- :mod:`legacygpu.inputs` builds the task types' inputs (physics, inference,
  gpu, generate).
- :class:`Admin` is a small client of the HTTP API (health, workers, tasks,
  owner controls).
"""

from . import inputs
from .admin import Admin
from .aio import AsyncClient, AsyncGeneration, AsyncTask
from .client import Client, Generation, Task
from .errors import (
    AcceptTimeout,
    ApiError,
    Busy,
    ClientClosed,
    ConnectFailed,
    ConnectionLost,
    LegacyGpuError,
    NotLeader,
    Rejected,
    TaskCancelled,
    TaskError,
    TaskFailed,
    TaskTimedOut,
    Unauthorized,
)

__version__ = "0.1.0"

__all__ = [
    "AcceptTimeout",
    "Admin",
    "ApiError",
    "AsyncClient",
    "AsyncGeneration",
    "AsyncTask",
    "Busy",
    "Client",
    "ClientClosed",
    "ConnectFailed",
    "ConnectionLost",
    "Generation",
    "LegacyGpuError",
    "NotLeader",
    "Rejected",
    "Task",
    "TaskCancelled",
    "TaskError",
    "TaskFailed",
    "TaskTimedOut",
    "Unauthorized",
    "inputs",
]
