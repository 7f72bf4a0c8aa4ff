"""Run the real ``legacygpu`` binary on 127.0.0.1 for tests, as
crates/test-support does for the Rust ones: ephemeral ports read from the
banner, a data directory of its own, real ``kill -9``. Every wait has a
deadline (:data:`WAIT`); nothing sleeps to wait for an event.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, List, NoReturn, Optional, Sequence, TypeVar

import pytest

#: How long any single wait may take before the test fails.
WAIT = 30.0
#: Coordinator flags that make failure detection fast in tests.
FAST = ["--heartbeat-timeout", "1", "--heartbeat-interval", "0.2"]

T = TypeVar("T")


def binary() -> Path:
    """The binary under test: $LEGACYGPU_BIN (set by the Rust test that runs
    this suite), else this checkout's debug build."""
    env = os.environ.get("LEGACYGPU_BIN")
    path = Path(env) if env else Path(__file__).resolve().parents[3] / "target" / "debug" / "legacygpu"
    if not path.exists():
        raise RuntimeError(f"no legacygpu binary at {path}: run `cargo build -p cli` or set LEGACYGPU_BIN")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A child process, killed when stopped; stdout lines on a queue, stderr in a log file."""

    def __init__(self, args: Sequence[str], env: Optional[dict] = None) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="legacygpu-proc-")
        self.log_path = Path(self.dir.name) / "stderr.log"
        full_env = {k: v for k, v in os.environ.items() if k != "LEGACYGPU_TOKEN"}
        full_env.update({"RUST_LOG": "info", "XDG_STATE_HOME": self.dir.name, "XDG_CONFIG_HOME": self.dir.name})
        full_env.update(env or {})
        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen(
                [str(binary()), *args], stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, env=full_env, text=True
            )
        self.lines: "queue.Queue[str]" = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_line(self, needle: str, timeout: float = WAIT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                exited = self.popen.poll() is not None and self.lines.empty()
                if exited or time.monotonic() > deadline:
                    why = f"the process exited ({self.popen.returncode})" if exited else f"not within {timeout} s"
                    raise AssertionError(f"no line containing {needle!r}: {why}; log:\n{self.log()}") from None
                continue
            if needle in line:
                return line

    def kill9(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=WAIT)

    stop = kill9


class Coordinator:
    """``legacygpu cluster start`` on 127.0.0.1 with ephemeral ports (or the
    ``bind`` given, to restart on the same port), and a store of its own
    unless ``data_dir`` (or ``--no-store``) says otherwise."""

    def __init__(self, extra: Sequence[str] = (), *, bind: Optional[str] = None, data_dir: Optional[str] = None) -> None:
        self._data = None if data_dir else tempfile.TemporaryDirectory(prefix="legacygpu-data-")
        self.data_dir = data_dir or (self._data.name if self._data else "")
        self.bind = bind or "127.0.0.1:0"
        self.extra = list(extra)
        args = ["cluster", "start", "--bind", self.bind, "--http", "127.0.0.1:0"]
        if "--no-store" not in self.extra:
            args += ["--data-dir", self.data_dir]
        self.proc = Proc(args + self.extra)
        self.ws_url = ""
        self.http_url = ""
        #: From the banner's TLS lines (as crates/test-support reads them):
        #: the CA pin, the worker join token and the client token.
        self.ca_hash = ""
        self.worker_token = ""
        self.client_token = ""
        while True:
            line = self.proc.wait_line("")
            value = line.split(": ", 1)[1].strip() if ": " in line else ""
            if line.strip().startswith("websocket:"):
                self.ws_url = value
            elif line.strip().startswith("http:"):
                self.http_url = value.split()[0]
            elif "CA sha256 " in line:
                self.ca_hash = line.split("CA sha256 ", 1)[1].strip()
            elif "--join " in line:
                self.worker_token = line.split("--join ", 1)[1].split()[0]
            elif line.strip().startswith("client token:"):
                self.client_token = value
            elif line.startswith("ready"):
                break

    @property
    def wss_url(self) -> str:
        """``wss://127.0.0.1:PORT``: TLS on the protocol port."""
        return self.ws_url.replace("ws://", "wss://", 1)

    @property
    def https_url(self) -> str:
        """``https://127.0.0.1:PORT``: TLS on the HTTP port."""
        return self.http_url.replace("http://", "https://", 1)

    @property
    def ca_file(self) -> str:
        """The coordinator's own CA certificate (``DATA_DIR/tls/ca.pem``)."""
        return str(Path(self.data_dir) / "tls" / "ca.pem")

    def kill9(self) -> None:
        self.proc.kill9()

    def restart(self) -> "Coordinator":
        """A new coordinator on the same port with the same data directory."""
        port = self.ws_url.rsplit(":", 1)[1]
        again = Coordinator(self.extra, bind=f"127.0.0.1:{port}", data_dir=self.data_dir)
        again._data, self._data = self._data, None  # the directory lives on with the new one
        return again


def worker(ws_url: str, peer_id: str, *extra: str) -> Proc:
    return Proc(["worker", "start", "--coordinator", ws_url, "--peer-id", peer_id, *extra])


def freeze(pid: int) -> None:
    """SIGSTOPs ``pid`` and returns once every thread of it has stopped (the
    signal is delivered asynchronously: a loaded machine can let the process
    answer one more message after ``kill`` returned)."""
    os.kill(pid, signal.SIGSTOP)

    def stopped() -> bool:
        states = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                stat = (task / "stat").read_text()
            except OSError:
                continue  # a thread that just ended
            states.append(stat.rsplit(")", 1)[1].split()[0])
        return bool(states) and all(state in ("T", "t") for state in states)

    until(stopped, f"process {pid} to stop")


def until(check: Callable[[], Optional[T]], what: str, timeout: float = WAIT, every: float = 0.02) -> T:
    """Polls ``check`` (each call asks the coordinator something) until it
    returns a value other than None/False."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(every)


def procs_stop(procs: List[Proc]) -> None:
    for p in procs:
        p.kill9()


def skip_or_fail(reason: str) -> NoReturn:
    """Skips a test whose real part is missing; fails instead in CI
    (LEGACYGPU_REQUIRE_PYTHON_CLIENT=1), where everything must really run."""
    if os.environ.get("LEGACYGPU_REQUIRE_PYTHON_CLIENT") == "1":
        pytest.fail(f"{reason}, and LEGACYGPU_REQUIRE_PYTHON_CLIENT=1")
    pytest.skip(reason)
