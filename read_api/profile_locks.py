"""Locking a live profile before the read API changes it (consents, erasure).

Workers change a profile only while holding its row lock (``SELECT ... FOR UPDATE``, see
workers/identity_store.py), so holding the same lock makes a read API change and a
worker batch strictly ordered: after the lock is granted, every statement sees what the
worker committed. The read API takes exactly one such lock per transaction, so it cannot
take part in a lock cycle with the workers.
"""

from __future__ import annotations

import uuid

import psycopg
from psycopg import AsyncConnection

from read_api.errors import Conflict, NotFound

LOCK_TIMEOUT_MS = 5000
_ATTEMPTS = 3


async def lock_live_profile(conn: AsyncConnection, tenant_id: str, profile_id: uuid.UUID) -> str:
    """Lock and return the live profile for ``profile_id`` (its survivor if merged away).

    Call inside a transaction. Raises NotFound if the tenant has no such profile and
    Conflict (409, ``profile_busy``) if a worker holds the profile longer than
    ``LOCK_TIMEOUT_MS`` or keeps merging it away meanwhile.
    """
    await conn.execute(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}")
    for _ in range(_ATTEMPTS):
        row = await (await conn.execute(
            "SELECT coalesce(merged_into, id) FROM profiles WHERE id = %s AND tenant_id = %s",
            (profile_id, tenant_id))).fetchone()
        if row is None:
            raise NotFound(f"no profile {profile_id}")
        try:
            locked = await (await conn.execute(
                "SELECT id::text, merged_into FROM profiles WHERE id = %s AND tenant_id = %s FOR UPDATE",
                (row[0], tenant_id))).fetchone()
        except psycopg.errors.LockNotAvailable:
            raise Conflict("a worker is updating this profile right now; retry shortly", code="profile_busy") from None
        if locked is not None and locked[1] is None:
            return locked[0]
        # Merged away (or erased) while we waited for the lock: resolve again.
    raise Conflict("this profile is being merged right now; retry shortly", code="profile_busy")
