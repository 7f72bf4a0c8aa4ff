"""Builders for the task types' inputs (docs/tasks/*.md), checked here.

Each returns the task's ``data``; submit it with its task type::

    client.submit("physics", inputs.physics([inputs.sphere("ball", 0.5, position=(0, 4, 0))], steps=60))
    client.submit("inference", inputs.inference("resnet50", "cat.jpg"))
    client.submit("gpu", inputs.matmul(m=512, k=512, n=512, seed=1))   # or inputs.gpu("matmul", …)
"""

from __future__ import annotations

import base64
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from ._wire import check_id, check_int, is_number

Vec3 = Sequence[float]
Image = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]

#: The inference executor's limit on the encoded image.
MAX_IMAGE_BYTES = 20 * 1024 * 1024


def _finite(field: str, value: Any) -> float:
    if not is_number(value):
        raise TypeError(f"{field} must be a number, not {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{field} must be finite, got {value!r}")
    return float(value)


def _positive(field: str, value: Any) -> float:
    v = _finite(field, value)
    if v <= 0:
        raise ValueError(f"{field} must be > 0, got {value!r}")
    return v


def _vec(field: str, value: Any, n: int = 3) -> List[float]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != n:
        raise TypeError(f"{field} must be a sequence of {n} numbers")
    return [_finite(f"{field}[{i}]", x) for i, x in enumerate(value)]


# ---- physics ---------------------------------------------------------------


def sphere(id: Union[str, int], radius: float, **body: Any) -> Dict[str, Any]:
    """A sphere body; ``body`` takes the other body fields (``position``,
    ``linear_velocity``, ``mass`` or ``density``, ``fixed``, ``restitution``…)."""
    return _body(id, {"type": "sphere", "radius": _positive("radius", radius)}, body)


def box(id: Union[str, int], half_extents: Vec3, **body: Any) -> Dict[str, Any]:
    """A box body with half extents ``[x, y, z]``."""
    he = _vec("half_extents", half_extents)
    if min(he) <= 0:
        raise ValueError("half_extents must be > 0")
    return _body(id, {"type": "box", "half_extents": he}, body)


def capsule(id: Union[str, int], half_height: float, radius: float, **body: Any) -> Dict[str, Any]:
    """A capsule along the body's Y axis."""
    shape = {"type": "capsule", "half_height": _positive("half_height", half_height), "radius": _positive("radius", radius)}
    return _body(id, shape, body)


_BODY_VECTORS = {"position": 3, "rotation": 4, "linear_velocity": 3, "angular_velocity": 3}
_BODY_NUMBERS = {"mass", "density", "friction", "restitution"}


def _body(id: Any, shape: Dict[str, Any], fields: Mapping[str, Any]) -> Dict[str, Any]:
    if isinstance(id, bool) or not isinstance(id, (str, int)):
        raise TypeError("a body id must be a str or an int")
    out: Dict[str, Any] = {"id": id, "shape": shape}
    for key, value in fields.items():
        if key in _BODY_VECTORS:
            out[key] = _vec(key, value, _BODY_VECTORS[key])
        elif key in _BODY_NUMBERS:
            v = _finite(key, value)
            if (key in ("mass", "density") and v <= 0) or v < 0:
                raise ValueError(f"{key} must be {'> 0' if key in ('mass', 'density') else '>= 0'}, got {value!r}")
            out[key] = v
        elif key == "fixed":
            if not isinstance(value, bool):
                raise TypeError("fixed must be a bool")
            out[key] = value
        else:
            raise ValueError(f"unknown body field {key!r} (known: {', '.join(sorted([*_BODY_VECTORS, *_BODY_NUMBERS, 'fixed']))})")
    if "mass" in out and "density" in out:
        raise ValueError("give a body mass or density, not both")
    return out


def physics(
    bodies: Sequence[Mapping[str, Any]],
    steps: int,
    *,
    dt: float = 1.0 / 60.0,
    gravity: Vec3 = (0.0, -9.81, 0.0),
    ground: Optional[Union[float, Mapping[str, float]]] = None,
) -> Dict[str, Any]:
    """The input of a ``physics`` task: ``steps`` steps of ``dt`` seconds.
    ``ground`` is the floor's height, or ``{"y", "friction", "restitution"}``."""
    if isinstance(bodies, (str, bytes, Mapping)) or not isinstance(bodies, Sequence):
        raise TypeError("bodies must be a list of bodies (see sphere(), box(), capsule())")
    ids = [b.get("id") for b in bodies]
    if len(set(map(repr, ids))) != len(ids):
        raise ValueError("body ids must be unique")
    check_int("steps", steps, 0, 100_000)
    d = _positive("dt", dt)
    if d > 1:
        raise ValueError("dt must be in (0, 1] seconds")
    data: Dict[str, Any] = {"gravity": _vec("gravity", gravity), "dt": d, "steps": steps, "bodies": [dict(b) for b in bodies]}
    if ground is not None:
        data["ground"] = {"y": _finite("ground", ground)} if is_number(ground) else dict(ground)  # type: ignore[arg-type]
    return data


# ---- inference ---------------------------------------------------------------


def inference(model: str, image: Image, *, top_k: Optional[int] = None) -> Dict[str, Any]:
    """The input of an ``inference`` task: ``image`` is a JPEG or PNG file's
    path, or its bytes, sent base64-encoded as the executor expects."""
    check_id("model", model)
    if isinstance(image, (bytes, bytearray, memoryview)):
        raw = bytes(image)
    elif isinstance(image, (str, os.PathLike)):
        with open(image, "rb") as f:
            raw = f.read(MAX_IMAGE_BYTES + 1)
    else:
        raise TypeError("image must be a file path or the image's bytes")
    if not raw:
        raise ValueError("the image is empty")
    if len(raw) > MAX_IMAGE_BYTES:
        raise ValueError(f"the image is over the executor's {MAX_IMAGE_BYTES}-byte limit")
    if not (raw.startswith(b"\x89PNG\r\n\x1a\n") or raw.startswith(b"\xff\xd8\xff")):
        raise ValueError("the image is neither a PNG nor a JPEG file")
    data: Dict[str, Any] = {"model": model, "image": base64.b64encode(raw).decode("ascii")}
    if top_k is not None:
        data["top_k"] = check_int("top_k", top_k, 1)
    return data


# ---- gpu ---------------------------------------------------------------------


def _device(device: str) -> str:
    if device not in ("auto", "gpu", "cpu"):
        raise ValueError("device must be 'auto', 'gpu' or 'cpu'")
    return device


def matmul(
    a: Optional[Sequence[float]] = None,
    b: Optional[Sequence[float]] = None,
    *,
    m: int,
    k: int,
    n: int,
    seed: Optional[int] = None,
    device: str = "auto",
) -> Dict[str, Any]:
    """A ``gpu`` matrix multiply (m×k by k×n): row-major ``a`` and ``b``, or
    matrices generated on the peer from ``seed``."""
    for name, v in (("m", m), ("k", k), ("n", n)):
        check_int(name, v, 1, 4096)
    data: Dict[str, Any] = {"op": "matmul", "m": m, "k": k, "n": n, "device": _device(device)}
    if seed is not None:
        if a is not None or b is not None:
            raise ValueError("give the matrices a and b, or a seed, not both")
        data["seed"] = check_int("seed", seed, 0)
        return data
    if a is None or b is None:
        raise ValueError("give both matrices a and b, or a seed")
    if len(a) != m * k or len(b) != k * n:
        raise ValueError(f"a must have m*k = {m * k} numbers and b k*n = {k * n} (got {len(a)} and {len(b)})")
    data["a"] = [_finite("a[]", x) for x in a]
    data["b"] = [_finite("b[]", x) for x in b]
    return data


def nbody(
    bodies: Optional[Sequence[Mapping[str, Any]]] = None,
    *,
    steps: int,
    n: Optional[int] = None,
    seed: Optional[int] = None,
    dt: float = 0.01,
    softening: float = 0.05,
    device: str = "auto",
) -> Dict[str, Any]:
    """A ``gpu`` n-body run: ``bodies`` (``{"pos", "vel", "mass"}``), or ``n``
    bodies generated on the peer from ``seed``."""
    data: Dict[str, Any] = {"op": "nbody", "steps": check_int("steps", steps, 1, 100_000),
                            "dt": _positive("dt", dt), "softening": _positive("softening", softening),
                            "device": _device(device)}
    if bodies is not None:
        if n is not None or seed is not None:
            raise ValueError("give bodies, or n and seed, not both")
        data["bodies"] = [{"pos": _vec("pos", b["pos"]), "vel": _vec("vel", b.get("vel", (0, 0, 0))),
                           "mass": _positive("mass", b.get("mass", 1.0))} for b in bodies]
        if not data["bodies"]:
            raise ValueError("bodies must not be empty")
        return data
    if n is None or seed is None:
        raise ValueError("give bodies, or both n and seed")
    data["n"] = check_int("n", n, 1, 65_536)
    data["seed"] = check_int("seed", seed, 0)
    return data


def gpu(op: str, **fields: Any) -> Dict[str, Any]:
    """The input of a ``gpu`` task by its ``op``: ``gpu("matmul", m=…, k=…,
    n=…, seed=…)`` is :func:`matmul`, ``gpu("nbody", steps=…, n=…, seed=…)``
    is :func:`nbody` (the same arguments, checked the same way)."""
    if op == "matmul":
        return matmul(**fields)
    if op == "nbody":
        return nbody(**fields)
    raise ValueError(f"unknown gpu op {op!r} (known: matmul, nbody)")


# ---- generate (LLM) ----------------------------------------------------------


def generate(
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
) -> Dict[str, Any]:
    """The input of a ``generate`` task: a ``prompt``, or chat ``messages``."""
    data: Dict[str, Any] = {"model": check_id("model", model)}
    if (prompt is None) == (messages is None):
        raise ValueError("give a prompt or messages (one of the two)")
    if prompt is not None:
        if not isinstance(prompt, str):
            raise TypeError("prompt must be a str")
        data["prompt"] = prompt
    else:
        if isinstance(messages, (str, Mapping)) or not isinstance(messages, Sequence) or not messages:
            raise TypeError("messages must be a non-empty list of {'role', 'content'} dicts")
        for m in messages:
            if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise TypeError("each message must be a dict with str 'role' and 'content'")
        data["messages"] = [{"role": m["role"], "content": m["content"]} for m in messages]
    if max_tokens is not None:
        data["max_tokens"] = check_int("max_tokens", max_tokens, 1)
    if temperature is not None:
        t = _finite("temperature", temperature)
        if t < 0:
            raise ValueError("temperature must be >= 0")
        data["temperature"] = t
    if top_p is not None:
        p = _finite("top_p", top_p)
        if not 0 < p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        data["top_p"] = p
    if top_k is not None:
        data["top_k"] = check_int("top_k", top_k, 0)
    if seed is not None:
        data["seed"] = check_int("seed", seed, 0)
    if stop is not None:
        if isinstance(stop, str):
            data["stop"] = stop
        elif isinstance(stop, Sequence) and all(isinstance(s, str) for s in stop):
            data["stop"] = list(stop)
        else:
            raise TypeError("stop must be a str or a list of str")
    return data
