"""Test fixtures: a real Postgres database migrated with Alembic to head, a dedicated Redis
database flushed around every test, jobs run in-process in burst mode.

The test database and Redis db are separate from the developer's (``stratum_test`` and
db 15 by default; override with STRATUM_TEST_DATABASE_URL / STRATUM_TEST_REDIS_URL), so
running the tests never wipes real data. When neither service is reachable, embedded ones
are started (stratum/services.py) with their data under .stratum/test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from redis import Redis

from stratum.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
TABLES = ("deliveries", "destinations", "events", "event_keys", "event_outcomes", "suppressed_identifiers", "consent_history", "consents", "profile_merges", "identity_links",
          "profile_identifiers", "profiles", "sources", "api_keys", "operators", "tenants")


def _test_urls() -> tuple[str, str]:
    # Tests are the one place besides stratum/settings.py that reads the environment:
    # they must never point at the developer's data by accident.
    return (os.environ.get("STRATUM_TEST_DATABASE_URL", "postgresql:///stratum_test"),
            os.environ.get("STRATUM_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"))


@pytest.fixture(scope="session")
def services():
    from stratum.services import ensure_services

    db_url, redis_url = _test_urls()
    svc = ensure_services(db_url, redis_url, ROOT / ".stratum" / "test")
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def settings(services) -> Settings:
    from stratum.cli import migrate
    from stratum.db.connect import database_name
    from stratum.settings import libpq_url

    s = Settings(database_url=services.database_url, redis_url=services.redis_url,
                 queue_name="stratum-test-events", default_rate_limit_per_s=0)
    name = database_name(s.database_url)
    assert "test" in name, f"refusing to use database {name!r} for tests: its name must contain 'test'"
    admin = psycopg.conninfo.make_conninfo(libpq_url(s.database_url), dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    migrate(s, quiet=True)
    return s


@pytest.fixture
def redis_conn(settings) -> Iterator[Redis]:
    r = Redis.from_url(settings.redis_url)
    r.flushdb()
    yield r
    r.flushdb()
    r.close()


@pytest.fixture
def db(settings) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the test database; every table is emptied after the test."""
    from stratum.db.connect import connect

    conn = connect(settings.database_url, autocommit=True)
    yield conn
    conn.execute(f"TRUNCATE {', '.join(TABLES)} CASCADE")
    conn.close()


@dataclass
class Tenant:
    id: str
    api_key: str
    source_id: str
    write_key: str


def make_tenant(conn: psycopg.Connection, name: str = "acme", source_type: str = "website",
                phone_region: str | None = "US") -> Tenant:
    from stratum.admin import create_source, create_tenant

    with conn.transaction():
        t = create_tenant(conn, f"{name}-{uuid.uuid4().hex[:6]}")
        s = create_source(conn, t.owner_id, "web", source_type, phone_region)
    return Tenant(str(t.owner_id), t.key, str(s.owner_id), s.key)


@pytest.fixture
def tenant(db) -> Tenant:
    return make_tenant(db)


@pytest.fixture
def worker_runtime(settings):
    from workers import runtime

    rt = runtime.install(runtime.WorkerRuntime(settings))
    yield rt
    rt.reset_connection()


@pytest.fixture
def drain(settings, redis_conn, worker_runtime):
    """Run every queued job in this process (RQ burst mode); return the number of failed jobs."""
    from rq.registry import FailedJobRegistry

    from workers.worker import build_worker

    def run() -> int:
        worker = build_worker(settings, redis_conn)
        worker.work(burst=True, logging_level="WARNING")
        q = worker.queues[0]
        return FailedJobRegistry(queue=q).count

    return run


@pytest.fixture
def ingest_client(settings, redis_conn, db):
    from litestar.testing import TestClient

    from ingest_api.app import create_app

    with TestClient(app=create_app(settings)) as client:
        yield client


@pytest.fixture
def read_client(settings, redis_conn, db):
    from litestar.testing import TestClient

    from read_api.app import create_app

    with TestClient(app=create_app(settings)) as client:
        yield client


@pytest.fixture
def new_tenant(db):
    """A factory: ``new_tenant(source_type="server", phone_region="GB")`` -> Tenant."""
    return lambda **kwargs: make_tenant(db, **kwargs)
