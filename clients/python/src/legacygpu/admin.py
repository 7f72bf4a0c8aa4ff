"""A small client of the coordinator's HTTP API (docs/API.md), stdlib only.

>>> admin = Admin("http://127.0.0.1:8000", api_key="…")      # doctest: +SKIP
>>> admin.health()["status"]
'HEALTHY'

Answers are the API's JSON bodies as dicts. Failures raise
:class:`~legacygpu.ApiError` (with ``status``, ``code`` and ``reason``), or
:class:`~legacygpu.Unauthorized` for 401/403, :class:`~legacygpu.Busy` for a
full queue, and a :class:`~legacygpu.TaskError` from :meth:`Admin.result` for
a task that ended without a result.
"""

from __future__ import annotations

import json
import ssl as _ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

from . import _wire, errors
from .aio import _credentials
from .tls import Tls


class Admin:
    """The HTTP API of one coordinator: ``api_url`` like ``http://HOST:8000``
    (``https://`` on the same port when the coordinator speaks TLS);
    ``api_key`` an API key (or the cluster token when the cluster has no
    keys). A client token ``lgj1-<CA hash>-<secret>`` given as ``api_key`` is
    split as the clients split it: its CA hash pins ``https://`` and only its
    secret is sent. TLS trust: ``ssl``, ``ca_file`` or ``ca_hash`` (see
    :mod:`legacygpu.tls`; the host name is checked in every mode); with an
    ``http://`` URL they are refused, before anything is sent."""

    def __init__(
        self,
        api_url: str,
        api_key: Optional[str] = None,
        *,
        timeout_s: float = 30.0,
        ssl: Optional[_ssl.SSLContext] = None,
        ca_file: Optional[str] = None,
        ca_hash: Optional[str] = None,
    ) -> None:
        if not isinstance(api_url, str) or not api_url.startswith(("http://", "https://")):
            raise ValueError(f"api_url must be an http:// or https:// URL, got {api_url!r}")
        if api_key is not None and (not isinstance(api_key, str) or not api_key):
            raise TypeError("api_key must be a non-empty str")
        self.api_url = api_url.rstrip("/")
        self._timeout = _wire.check_seconds("timeout_s", timeout_s) or 30.0
        self._key, ca_hash = _credentials(api_key, ca_hash, ssl is not None or ca_file is not None)
        self._tls = Tls(ssl, ca_file, ca_hash, urls=[self.api_url], secure="https://")
        self._opener: Optional[urllib.request.OpenerDirector] = None

    def _open(self, req: urllib.request.Request, timeout: float) -> Any:
        if self._opener is None:
            # Never through a proxy: the API is usually on a private network.
            handlers: List[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
            if self.api_url.startswith("https://"):
                try:
                    # A pin reads the server's chain first (nothing sent).
                    ctx = self._tls.context_for_sync(self.api_url, self._timeout)
                except OSError as e:
                    raise errors.ConnectFailed(f"cannot reach the API at {self.api_url}: {e}") from None
                if ctx is not None:
                    handlers.append(urllib.request.HTTPSHandler(context=ctx))
            self._opener = urllib.request.build_opener(*handlers)
        return self._opener.open(req, timeout=timeout)

    # ---- plumbing --------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: Optional[Mapping[str, Any]] = None,
        headers: Optional[Mapping[str, str]] = None,
        wait_s: float = 0.0,
    ) -> Tuple[int, Any]:
        """One call: (HTTP status, decoded JSON body). Raises on 4xx/5xx."""
        url = self.api_url + path
        if query:
            q = {k: v for k, v in query.items() if v is not None}
            if q:
                url += "?" + urllib.parse.urlencode(q)
        data = None if body is None else json.dumps(body, allow_nan=False).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self._key:
            req.add_header("Authorization", f"Bearer {self._key}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with self._open(req, self._timeout + wait_s) as resp:
                return resp.status, _json(resp.read())
        except urllib.error.HTTPError as e:
            raise _api_error(e.code, _json(e.read())) from None
        except urllib.error.URLError as e:
            raise errors.ConnectFailed(f"cannot reach the API at {self.api_url}: {e.reason}") from None

    def _get(self, path: str, **query: Any) -> Dict[str, Any]:
        return _body(self.request("GET", path, query=query)[1])

    def _post(self, path: str, body: Any = None) -> Dict[str, Any]:
        return _body(self.request("POST", path, {} if body is None else body)[1])

    @staticmethod
    def _seg(value: Any, what: str) -> str:
        return urllib.parse.quote(_wire.check_id(what, value), safe="")

    # ---- the cluster -----------------------------------------------------

    def health(self) -> Dict[str, Any]:
        """HEALTHY / DEGRADED / CRITICAL with worker and task counts."""
        return self._get("/cluster/health")

    def metrics(self) -> Dict[str, Any]:
        return self._get("/cluster/metrics")

    def config(self) -> Dict[str, Any]:
        return self._get("/cluster/config")

    def set_balancing(self, strategy: str) -> Any:
        """Switches the load-balancing strategy (admin)."""
        return self.request("PUT", "/cluster/config/balancing", {"strategy": strategy})[1]

    def shutdown(self) -> Any:
        """Shuts the coordinator down gracefully (admin)."""
        return self._post("/cluster/shutdown")

    def tokens(self) -> Dict[str, Any]:
        """The join tokens (admin): ``{"ca_sha256", "worker_token", "client_token"}``."""
        return self._get("/cluster/tokens")

    def rotate_tokens(self, kind: str = "both") -> Dict[str, Any]:
        """New join tokens (admin) for ``kind`` — ``worker``, ``client`` or
        ``both``: the old secrets admit nobody from now on (workers that
        already joined keep their own credentials). Returns the new tokens."""
        if kind not in ("worker", "client", "both"):
            raise ValueError(f"kind must be 'worker', 'client' or 'both', got {kind!r}")
        return self._post("/cluster/tokens/rotate", {"kind": kind})

    # ---- workers -------------------------------------------------------------

    def workers(self, status: Optional[str] = None) -> Dict[str, Any]:
        """``{"workers": [...], "total": n}``, optionally only those in one status: healthy, unhealthy (or ``late``),
        paused, draining or quarantined."""
        return self._get("/cluster/workers", status_filter=status)

    def worker(self, worker_id: str) -> Dict[str, Any]:
        return self._get(f"/cluster/workers/{self._seg(worker_id, 'worker_id')}")

    def worker_stats(self, worker_id: str) -> Dict[str, Any]:
        return self._get(f"/cluster/workers/{self._seg(worker_id, 'worker_id')}/stats")

    def register_worker(self, worker_id: str) -> Dict[str, Any]:
        """Approves a worker id and returns its join credential (admin)."""
        return self._post("/cluster/workers/register", {"worker_id": _wire.check_id("worker_id", worker_id)})

    # Owner controls (docs/DASHBOARD.md): an older coordinator without them
    # answers 404/405, raised as ApiError.

    def drain(self, worker_id: str) -> Any:
        """The worker takes no new tasks; its running ones finish, then it leaves (admin)."""
        return self._post(f"/cluster/workers/{self._seg(worker_id, 'worker_id')}/drain")

    def pause(self, worker_id: str) -> Any:
        return self._post(f"/cluster/workers/{self._seg(worker_id, 'worker_id')}/pause")

    def resume(self, worker_id: str) -> Any:
        return self._post(f"/cluster/workers/{self._seg(worker_id, 'worker_id')}/resume")

    def revoke(self, worker_id: str) -> Any:
        """Revokes the worker's own credential: its connection closes and the credential admits nobody (admin)."""
        return self._post(f"/cluster/workers/{self._seg(worker_id, 'worker_id')}/revoke")

    def clear(self, worker_id: str) -> Any:
        """Lifts a worker's quarantine (docs/VERIFICATION.md); ``cleared`` says whether it was quarantined (admin)."""
        return self._post(f"/cluster/workers/{self._seg(worker_id, 'worker_id')}/clear")

    # ---- tasks -----------------------------------------------------------------

    def tasks(
        self,
        status: Optional[str] = None,
        task_type: Optional[str] = None,
        limit: Optional[int] = None,
        offset: Optional[int] = None,
        *,
        worker_id: Optional[str] = None,
        owner: Optional[str] = None,
        submitted_from_ms: Optional[int] = None,
        submitted_to_ms: Optional[int] = None,
        before: Optional[str] = None,
    ) -> Dict[str, Any]:
        """``{"tasks": [...], "total", "limit", "offset", "next_before"}``,
        newest first: only tasks in ``status``, of ``task_type``, any attempt
        of which ran on ``worker_id``, of ``owner`` (``api``, ``gamer:ID`` or
        ``key:FINGERPRINT``),
        submitted in [``submitted_from_ms``, ``submitted_to_ms``) (Unix ms).
        Paging: ``before`` (the previous page's ``next_before``: fast at any
        depth; see :meth:`iter_tasks`) and/or ``offset``; ``limit`` at most 1000."""
        for name, value in (("limit", limit), ("offset", offset), ("submitted_from_ms", submitted_from_ms),
                            ("submitted_to_ms", submitted_to_ms)):
            if value is not None:
                _wire.check_int(name, value, 0)
        for name, text in (("status", status), ("task_type", task_type), ("worker_id", worker_id),
                           ("owner", owner), ("before", before)):
            if text is not None:
                _wire.check_id(name, text)
        return self._get("/cluster/tasks", status=status, task_type=task_type, worker_id=worker_id, owner=owner,
                         submitted_from_ms=submitted_from_ms, submitted_to_ms=submitted_to_ms, limit=limit,
                         before=before, offset=offset)

    def iter_tasks(
        self,
        status: Optional[str] = None,
        task_type: Optional[str] = None,
        *,
        worker_id: Optional[str] = None,
        owner: Optional[str] = None,
        submitted_from_ms: Optional[int] = None,
        submitted_to_ms: Optional[int] = None,
        page_size: int = 1000,
    ) -> Iterator[Dict[str, Any]]:
        """Every task the filter matches, newest first, a page at a time
        (keyset paging with ``before``/``next_before``)."""
        before: Optional[str] = None
        while True:
            page = self.tasks(status, task_type, limit=page_size, worker_id=worker_id, owner=owner,
                              submitted_from_ms=submitted_from_ms, submitted_to_ms=submitted_to_ms, before=before)
            yield from page.get("tasks", [])
            before = page.get("next_before")
            if not before or not page.get("tasks"):
                return

    def submit(self, task_type: str, data: Any = None, *, task_id: Optional[str] = None, **opts: Any) -> Dict[str, Any]:
        """Submits a task over REST with the task's options of
        :meth:`AsyncClient.submit` (``priority``, ``timeout_s``,
        ``queue_timeout_s``, ``max_attempts``, ``requirements``,
        ``idempotency_key``; not the client's own, such
        as ``accept_timeout``); ``data`` must be a JSON object here. Returns ``{"task_id" (the cluster id), "client_task_id", "existing", …}``."""
        body: Dict[str, Any] = {"task_type": _wire.check_id("task_type", task_type), "data": {} if data is None else data}
        if task_id is not None:
            body["task_id"] = _wire.check_id("task_id", task_id)
        body.update(_wire.task_fields(**opts))
        _wire.encode(body)  # refuses what is not JSON before sending
        return self._post("/cluster/tasks", body)

    def status(self, task_id: str) -> Dict[str, Any]:
        return self._get(f"/cluster/tasks/{self._seg(task_id, 'task_id')}/status")

    def result(self, task_id: str, timeout: float = 0.0) -> Dict[str, Any]:
        """The finished task's ``{"result", "worker_id", "attempts", …}``,
        waiting up to ``timeout`` seconds (at most 300) for it. Raises
        ``TimeoutError`` when it has not finished, a TaskError when it ended
        without a result."""
        wait = min(max(float(timeout), 0.0), 300.0)
        path = f"/cluster/tasks/{self._seg(task_id, 'task_id')}/result"
        try:
            status, body = self.request("GET", path, query={"timeout": wait}, wait_s=wait)
        except errors.ApiError as e:
            if e.status == 422:
                raise _task_error(task_id, e) from None
            raise
        if status == 202:
            raise TimeoutError(f"task {task_id} has not finished ({body.get('status')})")
        return _body(body)

    def cancel(self, task_id: str) -> Any:
        """Cancels a task (a running one is stopped on its worker)."""
        return self.request("DELETE", f"/cluster/tasks/{self._seg(task_id, 'task_id')}")[1]

    def retry(self, task_id: str) -> Any:
        """Runs a failed, cancelled or timed-out task again under the same id (client)."""
        return self._post(f"/cluster/tasks/{self._seg(task_id, 'task_id')}/retry")

    def bulk(self, action: str, *, confirm: bool = False, **filter: Any) -> Dict[str, Any]:
        """Cancels or retries every task the filter matches (admin; the
        coordinator works through them 10 000 at a time, so a large one may
        outlast ``timeout_s``): ``status``, ``task_type``, ``worker_id``, ``owner``,
        ``submitted_from_ms``, ``submitted_to_ms``. Without ``confirm`` it only
        counts (``matched``); with it, ``done`` and ``skipped`` say what it did."""
        if action not in ("cancel", "retry"):
            raise ValueError(f"action must be 'cancel' or 'retry', got {action!r}")
        known = {"status", "task_type", "worker_id", "owner", "submitted_from_ms", "submitted_to_ms"}
        unknown = sorted(set(filter) - known)
        if unknown:
            raise TypeError(f"unknown filter fields: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        body = {"action": action, "filter": filter, "confirm": bool(confirm)}
        return _body(self._post("/cluster/tasks/bulk", body))


def _body(value: Any) -> Dict[str, Any]:
    """The API's answers are JSON objects; an empty one (202) is {}."""
    return value if isinstance(value, dict) else {}


def _json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return {"detail": raw.decode("utf-8", "replace")}


def _api_error(status: int, body: Any) -> errors.LegacyGpuError:
    body = body if isinstance(body, dict) else {}
    code = str(body.get("error_code", "")) or f"http_{status}"
    detail = str(body.get("detail", "")) or f"HTTP {status}"
    task_id = body.get("task_id")
    if status in (401, 403):
        return errors.Unauthorized(f"{status} {code}: {detail}", status=status)
    if code == "busy":
        retry = body.get("retry_after_s")
        return errors.Busy(detail, retry_after_s=float(retry) if _wire.is_number(retry) else 1.0, task_id=task_id, status=status)
    return errors.ApiError(code, detail, task_id=task_id, status=status)


def _task_error(task_id: str, e: errors.ApiError) -> errors.TaskError:
    # The detail reads "the task <status>: <message>".
    status = "failed"
    for s in ("cancelled", "timed_out", "failed"):
        if e.reason.startswith(f"the task {s}"):
            status = s
    return errors.task_error({"task_id": task_id, "id": task_id, "status": status, "code": e.code, "reason": e.reason})
