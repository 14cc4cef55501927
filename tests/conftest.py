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
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from hypothesis import settings as hypothesis_settings
from hypothesis.database import DirectoryBasedExampleDatabase
from redis import Redis

from stratum.settings import Settings

ROOT = Path(__file__).resolve().parent.parent

# Property and schema fuzzing (tests/test_fuzz_schemas.py). By default, and so in CI
# (CI=true, .ci/run) unless a job asks for the long run, every run generates the same
# examples: derandomized Hypothesis, a fixed Schemathesis seed, fixed example counts and no
# example database carried between runs, so a clean tree cannot pass on one run and fail on
# the next. STRATUM_FUZZ=long is the separate exploratory run: random seeds, ten times the
# examples, and failures it finds kept in .hypothesis/ so the next long run replays them
# first. Read here because tests are the one place besides stratum/settings.py that read
# the environment.
FUZZ_LONG = os.environ.get("STRATUM_FUZZ", "").strip().lower() == "long"
FUZZ_SCALE = 10 if FUZZ_LONG else 1
FUZZ_SEED = None if FUZZ_LONG else 20261130
hypothesis_settings.register_profile("stratum-ci", derandomize=True, database=None, deadline=None, print_blob=True)
hypothesis_settings.register_profile(
    "stratum-long", derandomize=False, deadline=None, print_blob=True,
    database=DirectoryBasedExampleDatabase(str(ROOT / ".hypothesis" / "examples")))
hypothesis_settings.load_profile("stratum-long" if FUZZ_LONG else "stratum-ci")
TABLES = ("identity_blocks", "scheduler_marks", "deliveries", "destinations", "events", "event_keys", "event_outcomes", "suppressed_identifiers", "consent_history", "consents", "profile_merges", "identity_links",
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
    identity_secret: str | None = None  # website sources: the HMAC key of verified identity
    source_type: str = "server"


# SQL for "the stored form of the dedupe key %s of this events row" (its source decides the
# scope): the same digest as core/dedupe.py, for queries over events of any source.
STORED_KEY_SQL = ("(SELECT encode(sha256(convert_to(CASE WHEN s.type = 'website' THEN 's:' || s.id::text ELSE 't' END"
                  " || chr(10) || %s, 'UTF8')), 'hex') FROM sources s WHERE s.id = events.source_id)")


def stored_dedupe_key(tenant: Tenant, key: str) -> str:
    """``events.dedupe_key`` of an event sent by ``tenant``'s source with dedupe key ``key``:
    the hex SHA-256 of the key in the source's dedupe scope (core/dedupe.py)."""
    from core.dedupe import dedupe_digest, dedupe_scope

    return dedupe_digest(dedupe_scope(tenant.source_type, tenant.source_id), key).hex()


def make_tenant(conn: psycopg.Connection, name: str = "acme", source_type: str = "server",
                phone_region: str | None = "US") -> Tenant:
    from stratum.admin import create_source, create_tenant

    with conn.transaction():
        t = create_tenant(conn, f"{name}-{uuid.uuid4().hex[:6]}")
        s = create_source(conn, t.owner_id, "web", source_type, phone_region)
    return Tenant(str(t.owner_id), t.key, str(s.owner_id), s.key, s.identity_secret, source_type)


# The time the prepared events of ``prepared_event`` start from (an hour ago: inside retention).
PREPARED_T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def prepared_event(tenant: Tenant, n: int, *ids: tuple[str, str], key: str | None = None,
                   event_type: str = "track", traits: dict | None = None):
    """A server event of ``tenant``, prepared as a worker prepares it (workers/prepare.py),
    at ``PREPARED_T0`` + ``n`` seconds; ``ids`` are raw (type, value) pairs; ``key``: its
    dedupe key (default: its own event id)."""
    from core.schemas import QUEUE_FORMAT_VERSION, QueuedBatch, QueuedEvent
    from workers.prepare import prepare_batch

    eid = str(uuid.uuid4())
    event = QueuedEvent(eid, key or eid, event_type, "Viewed" if event_type == "track" else event_type,
                        PREPARED_T0 + timedelta(seconds=n), list(ids), {}, {}, traits or {}, None, 0, [])
    batch = QueuedBatch(QUEUE_FORMAT_VERSION, tenant.id, tenant.source_id, "server", "US", PREPARED_T0, "req",
                        None, None, [event])
    [prepared] = prepare_batch(batch)
    return prepared


@pytest.fixture
def tenant(db) -> Tenant:
    return make_tenant(db)


@pytest.fixture
def worker_runtime(settings):
    from workers import runtime

    rt = runtime.install(runtime.WorkerRuntime(settings))
    yield rt
    rt.reset_connection()
    rt.reset_side_connection()


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
