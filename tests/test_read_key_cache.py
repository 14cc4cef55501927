"""The read API's in-memory key cache (read_api/auth.py): a key is read from Postgres at
most once per TTL per process, revocation is effective within the TTL, and the TTL can
never exceed the CONTRACT's one second. Time is an injected clock, never a sleep."""

from __future__ import annotations

import asyncio
import uuid

from litestar.testing import TestClient
from psycopg_pool import AsyncConnectionPool
from test_read_support import auth

from read_api.auth import KeyDirectory
from stratum.admin import create_tenant_key, revoke_key
from stratum.settings import libpq_url


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _lookups_around_revocation(settings, db, tenant, ttl_s: float) -> list[bool]:
    """Key valid? before revocation, just after it, and once the clock passed the TTL."""
    with db.transaction():
        created = create_tenant_key(db, uuid.UUID(tenant.id), "read")

    async def run() -> list[bool]:
        clock = FakeClock()
        async with AsyncConnectionPool(libpq_url(settings.database_url), min_size=1, max_size=1) as pool:
            keys = KeyDirectory(pool, ttl_s, clock=clock)
            seen = [await keys.lookup(created.key) is not None]
            with db.transaction():
                assert revoke_key(db, created.key_id)
            seen.append(await keys.lookup(created.key) is not None)
            clock.now += keys.ttl_s + 0.001
            seen.append(await keys.lookup(created.key) is not None)
            return seen

    return asyncio.run(run())


def test_keys_are_served_from_memory_until_the_ttl_then_revocation_holds(settings, db, tenant):
    # Still valid right after the revocation: served from memory, no database query.
    assert _lookups_around_revocation(settings, db, tenant, ttl_s=1.0) == [True, True, False]


def test_a_zero_ttl_makes_revocation_immediate(settings, db, tenant):
    assert _lookups_around_revocation(settings, db, tenant, ttl_s=0.0) == [True, False, False]


def test_the_ttl_is_capped_at_one_second():
    assert KeyDirectory(None, ttl_s=30).ttl_s == 1.0  # type: ignore[arg-type]
    assert KeyDirectory(None, ttl_s=-1).ttl_s == 0.0  # type: ignore[arg-type]


def test_the_ttl_comes_from_the_settings(settings, db, tenant):
    from read_api.app import create_app

    with db.transaction():
        created = create_tenant_key(db, uuid.UUID(tenant.id), "read")
    with TestClient(app=create_app(settings.replace(read_key_cache_ttl_s=0.0))) as client:
        assert client.app.state.read.keys.ttl_s == 0.0
        assert client.get("/api/v1/cdp/sources", headers=auth(created.key)).status_code == 200
        with db.transaction():
            assert revoke_key(db, created.key_id)
        assert client.get("/api/v1/cdp/sources", headers=auth(created.key)).status_code == 401
