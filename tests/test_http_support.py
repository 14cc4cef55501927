"""Helpers shared by the tests that drive real server processes (no tests here): start
``stratum ingest-api`` / ``stratum read-api`` on a free loopback port with the test
database and Redis, and talk raw HTTP/1.1 to them."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from stratum.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
START_DEADLINE_S = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningServer:
    host: str
    port: int
    log_path: Path

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def _status(url: str, timeout_s: float = 1.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


@contextlib.contextmanager
def run_server(command: str, settings: Settings, **env: str) -> Iterator[RunningServer]:
    """``python -m stratum.cli <command>`` (``ingest-api`` or ``read-api``) on a free port,
    configured like ``settings`` plus ``STRATUM_<NAME>`` overrides from ``env``; stopped (with
    the workers it forked) on exit."""
    port = free_port()
    full_env = {**os.environ, "STRATUM_DATABASE_URL": settings.database_url, "STRATUM_REDIS_URL": settings.redis_url,
                "STRATUM_QUEUE_NAME": settings.queue_name, "STRATUM_DEFAULT_RATE_LIMIT_PER_S": "0",
                **{f"STRATUM_{k.upper()}": str(v) for k, v in env.items()}}
    log = tempfile.NamedTemporaryFile(prefix=f"stratum-{command}-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "stratum.cli", command, "--host", "127.0.0.1", "--port", str(port)],
                            cwd=ROOT, env=full_env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    server = RunningServer("127.0.0.1", port, Path(log.name))
    try:
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"{command} exited with {proc.returncode}:\n{server.log()}")
            with contextlib.suppress(OSError):
                if _status(f"{server.base}/health") == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"{command} not healthy within {START_DEADLINE_S} s:\n{server.log()}")
            time.sleep(0.1)
        yield server
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        log.close()
        os.unlink(log.name)


def raw_request(server: RunningServer, data: bytes, timeout_s: float = 10.0) -> bytes:
    """Send ``data`` as is on a fresh connection; return everything the server answers
    until it closes the connection or ``timeout_s`` passes without a byte."""
    with socket.create_connection((server.host, server.port), timeout=timeout_s) as s:
        s.sendall(data)
        chunks = []
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := s.recv(65536):
                chunks.append(chunk)
                if _complete(b"".join(chunks)):
                    break
        return b"".join(chunks)


def _complete(response: bytes) -> bool:
    head, sep, body = response.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


def status_of(response: bytes) -> int:
    """The status code of a raw HTTP/1.1 response (0 when there was none)."""
    parts = response.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def body_of(response: bytes) -> bytes:
    return response.partition(b"\r\n\r\n")[2]
