"""Building and checking the protocol's messages (docs/PROTOCOL.md), no IO.

Every argument is checked here, with the coordinator's own limits, so that a
bad one raises ``TypeError`` or ``ValueError`` before anything is sent.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Dict, Mapping, Optional, Union

#: Ids (task ids, task types, idempotency keys, models): bytes at most.
MAX_ID_BYTES = 256
#: ``timeout_s`` and ``queue_timeout_s``: seconds at most (7 days).
MAX_TIMEOUT_S = 7 * 24 * 3600.0
MAX_ATTEMPTS = 100
#: The coordinator's default frame limit; larger messages close the connection.
DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024
PRIORITY_NAMES = ("LOW", "NORMAL", "HIGH", "CRITICAL")
I32 = (-(2**31), 2**31 - 1)
#: The coordinator reads ``min_vram_mb`` as an unsigned 64-bit integer.
U64_MAX = 2**64 - 1

Priority = Union[int, str]


def check_id(field: str, value: Any) -> str:
    """An id: a non-empty string of at most 256 bytes without control characters."""
    if not isinstance(value, str):
        raise TypeError(f"{field} must be a str, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{field} must not be empty")
    if len(value.encode("utf-8")) > MAX_ID_BYTES:
        raise ValueError(f"{field} is longer than {MAX_ID_BYTES} bytes")
    if _CONTROL.search(value):
        raise ValueError(f"{field} contains control characters")
    return value


# Rust's char::is_control, which the coordinator applies: the Cc category (C0, DEL, C1).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_seconds(field: str, value: Any) -> Optional[float]:
    if value is None:
        return None
    if not is_number(value):
        raise TypeError(f"{field} must be a number of seconds, not {type(value).__name__}")
    # A huge int is out of range, not an OverflowError from isfinite.
    if not (0 < value <= MAX_TIMEOUT_S and math.isfinite(value)):
        raise ValueError(f"{field} must be in (0, {MAX_TIMEOUT_S:.0f}] seconds, got {value!r}")
    return float(value)


def check_int(field: str, value: Any, lo: int, hi: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{field} must be an int, not {type(value).__name__}")
    if value < lo or (hi is not None and value > hi):
        bound = f"{lo}..={hi}" if hi is not None else f">= {lo}"
        raise ValueError(f"{field} must be {bound}, got {value}")
    return value


def check_priority(value: Any) -> Optional[Priority]:
    if value is None:
        return None
    if isinstance(value, str):
        name = value.strip().upper()
        if name not in PRIORITY_NAMES:
            raise ValueError(f"priority must be one of {', '.join(PRIORITY_NAMES)} or an int, got {value!r}")
        return name
    return check_int("priority", value, I32[0], I32[1])


def check_requirements(value: Any) -> Optional[Dict[str, Any]]:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(f"requirements must be a dict, not {type(value).__name__}")
    unknown = set(value) - {"model", "gpu", "min_vram_mb"}
    if unknown:
        raise ValueError(f"unknown requirements: {', '.join(sorted(map(str, unknown)))} (known: model, gpu, min_vram_mb)")
    out: Dict[str, Any] = {}
    if value.get("model") is not None:
        out["model"] = check_id("requirements['model']", value["model"])
    if "gpu" in value:
        if not isinstance(value["gpu"], bool):
            raise TypeError("requirements['gpu'] must be a bool")
        if value["gpu"]:
            out["gpu"] = True
    if value.get("min_vram_mb") is not None:
        out["min_vram_mb"] = check_int("requirements['min_vram_mb']", value["min_vram_mb"], 0, U64_MAX)
    return out


def encode(message: Mapping[str, Any]) -> str:
    """Compact JSON; NaN and infinities (not JSON) are refused with ValueError."""
    try:
        return json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError as e:
        raise ValueError(f"the task's data is not valid JSON: {e}") from None
    except TypeError as e:
        raise TypeError(f"the task's data is not JSON-serializable: {e}") from None


def task_fields(
    *,
    priority: Any = None,
    timeout_s: Any = None,
    queue_timeout_s: Any = None,
    max_attempts: Any = None,
    requirements: Any = None,
    idempotency_key: Any = None,
) -> Dict[str, Any]:
    """The checked optional fields of a submission (wire and REST alike)."""
    fields = {
        "priority": check_priority(priority),
        "timeout_s": check_seconds("timeout_s", timeout_s),
        "queue_timeout_s": check_seconds("queue_timeout_s", queue_timeout_s),
        "max_attempts": None if max_attempts is None else check_int("max_attempts", max_attempts, 1, MAX_ATTEMPTS),
        "requirements": check_requirements(requirements),
        "idempotency_key": None if idempotency_key is None else check_id("idempotency_key", idempotency_key),
    }
    return {k: v for k, v in fields.items() if v is not None}


def task_request(task_type: Any, data: Any, *, task_id: str, stream: bool = False, **opts: Any) -> Dict[str, Any]:
    """A checked ``task_request``; ``opts`` are :func:`task_fields`'. The
    idempotency key defaults to the task id, so a resubmission is safe."""
    msg: Dict[str, Any] = {
        "msg_type": "task_request",
        "task_id": check_id("task_id", task_id),
        "task_type": check_id("task_type", task_type),
        "data": {} if data is None else data,
    }
    msg.update(task_fields(**opts))
    msg.setdefault("idempotency_key", task_id)
    if stream:
        msg["stream"] = True
    return msg


def frame(message: Mapping[str, Any], max_frame_bytes: int) -> str:
    """The message as a text frame, refused when over the coordinator's limit
    (a frame over it would close the connection, and every resubmission again)."""
    text = encode(message)
    size = len(text.encode("utf-8"))
    if size > max_frame_bytes:
        raise ValueError(f"the task request is {size} bytes, over the {max_frame_bytes}-byte frame limit")
    return text
