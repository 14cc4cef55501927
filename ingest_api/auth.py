"""Write-key authentication: key from Basic/Bearer headers or the body, looked up by hash.

Lookups are cached in-process for at most ``CACHE_TTL_S`` so that disabling a source or
rotating its key takes effect everywhere within a second (CONTRACT section 3).
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ingest_api.errors import Forbidden, Unauthorized, Unavailable
from stratum.keys import hash_key

CACHE_TTL_S = 1.0


@dataclass(frozen=True)
class Source:
    id: str
    tenant_id: str
    type: str
    active: bool
    phone_region: str | None
    rate_limit: int | None
    allowed_origins: tuple[str, ...]
    extra_blocked: frozenset[str]


def key_from_headers(authorization: str | None) -> str | None:
    """The write key of an ``Authorization`` header (Basic: key as user name; or Bearer)."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    scheme = scheme.lower()
    value = value.strip()
    if scheme == "bearer" and value:
        return value
    if scheme == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise Unauthorized("Authorization: Basic must carry base64 of 'WRITE_KEY:'") from None
        user, _, _password = decoded.partition(":")
        return user or None
    raise Unauthorized("use Authorization: Basic (write key as user name) or Bearer WRITE_KEY")


_SOURCE_SQL = """
SELECT s.id::text, s.tenant_id::text, s.type, s.active, s.phone_region, s.rate_limit,
       s.allowed_origins, coalesce(t.settings -> 'blocked_values', '[]'::jsonb)
FROM sources s JOIN tenants t ON t.id = s.tenant_id
WHERE s.write_key_hash = %s
"""


class SourceDirectory:
    """Finds the source of a write key, with a short in-process cache."""

    def __init__(self, pool: AsyncConnectionPool, global_blocked: frozenset[str] = frozenset()) -> None:
        """``global_blocked``: values blocked for every tenant (STRATUM_BLOCKED_VALUES)."""
        self._pool = pool
        self._global_blocked = global_blocked
        self._cache: dict[str, tuple[float, Source | None]] = {}

    async def lookup(self, key: str) -> Source | None:
        digest = hash_key(key)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            async with self._pool.connection(timeout=5.0) as conn:
                row = await (await conn.execute(_SOURCE_SQL, (digest,))).fetchone()
        except (psycopg.OperationalError, PoolTimeout):
            raise Unavailable("cannot check the write key right now; nothing was accepted", retry_after_s=5,
                              code="auth_unavailable") from None
        source = None
        if row is not None:
            source = Source(
                id=row[0], tenant_id=row[1], type=row[2], active=row[3], phone_region=row[4],
                rate_limit=row[5], allowed_origins=tuple(row[6] or ()),
                extra_blocked=self._global_blocked | {str(v).strip().lower() for v in row[7]},
            )
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now + CACHE_TTL_S, source)
        return source

    async def authenticate(self, key: str | None) -> Source:
        """The active source of ``key``; Unauthorized (401) or Forbidden (403) otherwise."""
        if not key:
            raise Unauthorized("missing write key: send it as Basic auth user name, Bearer token or body writeKey")
        source = await self.lookup(key)
        if source is None:
            raise Unauthorized("unknown write key")
        if not source.active:
            raise Forbidden("this source is disabled; enable it or use another write key")
        return source


def check_origin(source: Source, origin: str | None) -> None:
    """Browsers send ``Origin``; a source that lists allowed origins accepts only those.
    (Write keys are public in browsers, so this limits misuse, it does not authenticate.)"""
    if origin is None or not source.allowed_origins:
        return
    if origin.rstrip("/") not in {o.rstrip("/") for o in source.allowed_origins}:
        raise Forbidden(f"origin {origin} is not allowed for this source", code="origin_not_allowed")
