"""The ``stratum`` command fails in one clear line, with a non-zero exit and within
seconds, on malformed URLs, URLs pointing at the wrong service and refused roles; and
``stratum status`` prints text or JSON, never both."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from stratum.preflight import CONNECT_TIMEOUT_S


def _stratum(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stratum.cli", *args], env={**os.environ, "STRATUM_SECRET_KEY": "cli-errors-test-key", **env},
                          capture_output=True, text=True, timeout=timeout)


def _assert_one_line_error(out: subprocess.CompletedProcess, *fragments: str) -> str:
    assert out.returncode in (2, 3), (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers: another kind of service
    (or a firewall) where Postgres or Redis was expected. Yields the port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


@pytest.mark.parametrize("url", ["foo", "mysql://u@h/db", "postgresql://u:hunter2@h:x/db"])
def test_malformed_database_url(settings, url):
    line = _assert_one_line_error(_stratum("tenant", "create", "x", STRATUM_DATABASE_URL=url),
                                  "STRATUM_DATABASE_URL", "postgresql://")
    assert "hunter2" not in line
    assert _stratum("tenant", "create", "x", STRATUM_DATABASE_URL=url).returncode == 2


@pytest.mark.parametrize("url", ["foo", "http://127.0.0.1:6379", "redis://:hunter2@h:x/0"])
def test_malformed_redis_url(settings, url):
    line = _assert_one_line_error(_stratum("status", STRATUM_REDIS_URL=url), "STRATUM_REDIS_URL", "redis://")
    assert "hunter2" not in line


def test_malformed_url_stops_long_running_commands_too(settings):
    out = _stratum("worker", "--burst", STRATUM_REDIS_URL="nonsense", STRATUM_DATABASE_URL=settings.database_url)
    _assert_one_line_error(out, "STRATUM_REDIS_URL")


def test_database_url_pointing_at_a_silent_service(settings, silent_server):
    # libpq's connect timeout bounds the wait: the subprocess timeout here only catches a hang
    out = _stratum("tenant", "create", "x", timeout=CONNECT_TIMEOUT_S * 4,
                   STRATUM_DATABASE_URL=f"postgresql://127.0.0.1:{silent_server}/stratum")
    assert out.returncode == 3
    _assert_one_line_error(out, f"127.0.0.1:{silent_server}", "STRATUM_DATABASE_URL", "right host and port")


def test_migrate_against_a_silent_service(settings, silent_server):
    out = _stratum("migrate", timeout=CONNECT_TIMEOUT_S * 4,
                   STRATUM_DATABASE_URL=f"postgresql://127.0.0.1:{silent_server}/stratum")
    _assert_one_line_error(out, "STRATUM_DATABASE_URL")


def test_redis_url_pointing_at_a_silent_service(settings, silent_server):
    out = _stratum("status", "--json", timeout=CONNECT_TIMEOUT_S * 4,
                   STRATUM_REDIS_URL=f"redis://:hunter2@127.0.0.1:{silent_server}/0")
    assert out.returncode == 3 and out.stdout == ""
    line = _assert_one_line_error(out, f"127.0.0.1:{silent_server}", "STRATUM_REDIS_URL")
    assert "hunter2" not in line


def test_wrong_role_and_missing_database(settings):
    out = _stratum("tenant", "create", "x", STRATUM_DATABASE_URL="postgresql://no_such_role_here@/stratum")
    _assert_one_line_error(out, "no_such_role_here", "does not exist")
    out = _stratum("tenant", "create", "x", STRATUM_DATABASE_URL="postgresql:///stratum_no_such_database_ops")
    _assert_one_line_error(out, "stratum_no_such_database_ops", "stratum migrate")


def test_setting_that_is_not_a_number(settings):
    out = _stratum("status", STRATUM_REDIS_URL=settings.redis_url, STRATUM_DB_POOL_MAX="many")
    _assert_one_line_error(out, "STRATUM_DB_POOL_MAX")


def test_status_prints_text_or_json_never_both(settings, redis_conn):
    env = {"STRATUM_REDIS_URL": settings.redis_url, "STRATUM_QUEUE_NAME": settings.queue_name}
    text = _stratum("status", **env)
    assert text.returncode == 0, text.stderr
    assert "{" not in text.stdout and f"{settings.queue_name}: queued=0" in text.stdout
    assert "workers: 0" in text.stdout
    as_json = _stratum("status", "--json", **env)
    assert as_json.returncode == 0, as_json.stderr
    (line,) = as_json.stdout.strip().splitlines()
    assert set(json.loads(line)) == {"queues", "workers"}


@pytest.mark.parametrize("command", [["status"], ["worker", "--burst"], ["secrets", "reseal"]])
def test_processes_refuse_to_start_without_a_key_when_one_is_required(command):
    out = _stratum(*command, timeout=30, STRATUM_SECRET_KEY="", STRATUM_REQUIRE_SECRET_KEY="true")
    assert out.returncode == 2
    _assert_one_line_error(out, "STRATUM_REQUIRE_SECRET_KEY", "STRATUM_SECRET_KEY is not set")
