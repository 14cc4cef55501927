"""``stratum dev`` and the API servers over real processes: taken ports end in one line and
exit 2 (and a running server cannot be joined by a second one); dev prints the URLs it
uses and an export line that works in a shell, prefixes its children's output, reuses its
demo tenant on a rerun with keys that still work, and says in one line what Ctrl-C
stopped. Uses the test Postgres and Redis (no embedded services: they are slow)."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from stratum.api_server import check_port_free
from stratum.keys import hash_key

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port some other program listens on (a plain socket, no SO_REUSEPORT)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield s.getsockname()[1]


def _env(settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRATUM_")}
    return {**env, "STRATUM_DATABASE_URL": settings.database_url, "STRATUM_REDIS_URL": settings.redis_url, **extra}


def _stratum(settings, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stratum.cli", *args], env=_env(settings, **env),
                          capture_output=True, text=True, timeout=timeout)


def _one_error_line(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    return lines[0]


def test_api_server_refuses_a_taken_port(settings, taken_port):
    started = time.monotonic()
    line = _one_error_line(_stratum(settings, "read-api", "--port", str(taken_port), STRATUM_SECRET_KEY="k"))
    assert f"127.0.0.1:{taken_port}" in line and "another process listens there" in line
    assert time.monotonic() - started < 20


def test_a_running_api_server_cannot_be_joined(settings):
    port = _free_port()
    first = subprocess.Popen([sys.executable, "-m", "stratum.cli", "ingest-api", "--port", str(port), "--workers", "2"],
                             env=_env(settings, STRATUM_SECRET_KEY="k"), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline and first.poll() is None, "ingest API did not come up"
                time.sleep(0.2)
        line = _one_error_line(_stratum(settings, "ingest-api", "--port", str(port), STRATUM_SECRET_KEY="k"))
        assert f":{port}" in line
        # granian itself binds without SO_REUSEPORT: not even a socket asking for reuse can join
        with socket.socket() as s, pytest.raises(OSError):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind(("127.0.0.1", port))
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(30)


@pytest.mark.parametrize("which", ["ingest", "read"])
def test_dev_refuses_a_taken_port_before_starting_anything(settings, taken_port, tmp_path, which):
    ports = {"ingest": _free_port(), "read": _free_port(), which: taken_port}
    data_dir = tmp_path / "dev"
    out = _stratum(settings, "dev", "--ingest-port", str(ports["ingest"]), "--read-port", str(ports["read"]),
                   "--data-dir", str(data_dir), timeout=30)
    line = _one_error_line(out)
    assert f"the {which} API on 127.0.0.1:{taken_port}" in line and f"--{which}-port" in line
    assert out.stdout == "" and not data_dir.exists()  # no service touched, nothing migrated


def _value(stdout: str, name: str) -> str:
    line = next(line for line in stdout.splitlines() if line.startswith(name + "="))
    return shlex.split(line.partition("=")[2])[0]


def _banner(stdout: str) -> dict[str, str]:
    return {k: re.search(rf"^  {k}\s+(\S+)$", stdout, re.M).group(1) for k in ("tenant id", "tenant key", "write key")}


def _dev_args(data_dir: Path, ingest: int, read: int) -> list[str]:
    return ["dev", "--workers", "1", "--ingest-port", str(ingest), "--read-port", str(read),
            "--data-dir", str(data_dir)]


def test_dev_prints_its_urls_and_prefixes_child_output(settings, db, redis_conn, tmp_path):
    data_dir = tmp_path / "dev"
    out = _stratum(settings, *_dev_args(data_dir, _free_port(), _free_port()), "--check", STRATUM_LOG_LEVEL="INFO")
    assert out.returncode == 0, (out.stdout, out.stderr)
    assert _value(out.stdout, "STRATUM_DATABASE_URL") == settings.database_url
    assert _value(out.stdout, "STRATUM_REDIS_URL") == settings.redis_url
    export = next(line for line in out.stdout.splitlines() if line.startswith("export "))
    shell = subprocess.run(["bash", "-c", f'{export}; printf "%s\\n" "$STRATUM_DATABASE_URL" "$STRATUM_REDIS_URL" '
                                          '"$STRATUM_SECRET_KEY"'], capture_output=True, text=True, check=True)
    secret = (data_dir / "secret_key").read_text().strip()
    assert shell.stdout.splitlines() == [settings.database_url, settings.redis_url, secret]
    assert secret not in out.stdout  # referenced by file, never echoed
    for name in ("ingest", "read", "worker", "scheduler"):
        assert re.search(rf"^{name} \| \S", out.stdout, re.M), f"no '{name} | ' line in:\n{out.stdout}"
    assert "Job OK" in out.stdout  # STRATUM_LOG_LEVEL=INFO was passed on to the worker
    assert out.stdout.rstrip().splitlines()[-1].startswith("stopped: ingest, read, worker, scheduler, deliver;")
    keys = _banner(out.stdout)
    assert stat.S_IMODE((data_dir / "demo.json").stat().st_mode) == 0o600
    assert db.execute("SELECT count(*) FROM api_keys WHERE tenant_id = %s AND key_hash = %s AND revoked_at IS NULL",
                      (keys["tenant id"], hash_key(keys["tenant key"]))).fetchone()[0] == 1


def _run_until_ready(settings, args: list[str]) -> tuple[subprocess.Popen, list[str]]:
    proc = subprocess.Popen([sys.executable, "-m", "stratum.cli", *args], env=_env(settings), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("Press Ctrl-C"):
            return proc, lines
    proc.wait(30)
    raise AssertionError(f"stratum dev exited {proc.returncode}:\n{''.join(lines)}{proc.stderr.read()}")


def test_dev_rerun_reuses_the_demo_tenant_and_ctrl_c_says_what_stopped(settings, db, redis_conn, tmp_path):
    data_dir, ingest, read = tmp_path / "dev", _free_port(), _free_port()
    first = _stratum(settings, *_dev_args(data_dir, ingest, read), "--check")
    assert first.returncode == 0, (first.stdout, first.stderr)
    keys = _banner(first.stdout)

    proc, lines = _run_until_ready(settings, _dev_args(data_dir, ingest, read))
    try:
        assert _banner("".join(lines)) == keys  # the same tenant, source and keys
        assert "    reused (tenant" in "".join(lines)
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    output = "".join(lines) + rest
    assert rest.strip().splitlines() == [
        "stopped: ingest, read, worker, scheduler, deliver; Postgres and Redis were not started here and keep running"]
    assert not re.search(r"^worker \| .*INFO", output, re.M)  # job chatter stays out of the way by default
    check_port_free("127.0.0.1", ingest)  # everything it started has gone
    check_port_free("127.0.0.1", read)
    assert db.execute("SELECT count(*) FROM tenants").fetchone()[0] == 1
    assert db.execute("SELECT count(*) FROM sources").fetchone()[0] == 1

    # A revoked key is replaced on the next run, and the new one is printed and works.
    db.execute("UPDATE api_keys SET revoked_at = now() WHERE key_hash = %s", (hash_key(keys["tenant key"]),))
    third = _stratum(settings, *_dev_args(data_dir, ingest, read), "--check")
    assert third.returncode == 0, (third.stdout, third.stderr)
    assert "reused; new tenant key" in third.stdout
    new = _banner(third.stdout)
    assert new["tenant id"] == keys["tenant id"] and new["write key"] == keys["write key"]
    assert new["tenant key"] != keys["tenant key"]
    assert db.execute("SELECT count(*) FROM api_keys WHERE key_hash = %s AND revoked_at IS NULL",
                      (hash_key(new["tenant key"]),)).fetchone()[0] == 1


def test_root_is_told_about_the_system_user_before_it_is_created(tmp_path, monkeypatch):
    """As root, pgserver creates a system user (useradd) in get_server: the notice comes
    first. The system's user database is faked: the test must not create users."""
    import pwd

    from stratum import services

    pgserver = services._pgserver()
    calls: list[str] = []

    def get_server(*args, **kwargs):
        calls.append("get_server")
        raise RuntimeError("stop before any change")

    def no_such_user(name):
        raise KeyError(name)

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(pwd, "getpwnam", no_such_user)
    monkeypatch.setattr(pgserver, "get_server", get_server)
    with pytest.raises(RuntimeError, match="stop before any change"):
        services._start_postgres("postgresql:///stratum", tmp_path / "pg", calls.append)
    assert calls[1:] == ["get_server"]
    assert calls[0].startswith("running as root") and "'pgserver'" in calls[0] and str(tmp_path / "pg") in calls[0]

    monkeypatch.setattr(pwd, "getpwnam", lambda name: object())  # the user exists: nothing to say
    assert services.root_system_user_notice(tmp_path / "pg") is None
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(pwd, "getpwnam", no_such_user)
    assert services.root_system_user_notice(tmp_path / "pg") is None


def test_embedded_flag_ignores_services_that_answer(settings, tmp_path):
    from stratum.services import ensure_services

    # Both answer (the test services), yet forced embedded servers are what is asked for.
    with pytest.raises(RuntimeError, match="Postgres is not reachable.*Redis is not reachable"):
        ensure_services(settings.database_url, settings.redis_url, tmp_path, allow_embedded=False,
                        force_embedded=True)
