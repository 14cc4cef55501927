"""Tenant and operator API keys (``Authorization: Bearer KEY``), looked up by hash.

Cached in-process for at most one second, so revocation is effective everywhere within a
second (CONTRACT section 3).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from litestar import Request
from psycopg_pool import AsyncConnectionPool

from read_api.errors import Forbidden, Unauthorized
from stratum.keys import hash_key

CACHE_TTL_S = 1.0


@dataclass(frozen=True)
class Principal:
    key_id: str
    role: str  # admin | read | operator
    tenant_id: str | None
    operator_id: str | None

    def require_write(self) -> None:
        if self.role == "read":
            raise Forbidden("this key is read-only; use an admin key to change data", code="read_only_key")


class KeyDirectory:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def lookup(self, key: str) -> Principal | None:
        digest = hash_key(key)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        async with self._pool.connection() as conn:
            row = await (await conn.execute(
                "SELECT id::text, role, tenant_id::text, operator_id::text FROM api_keys"
                " WHERE key_hash = %s AND revoked_at IS NULL", (digest,))).fetchone()
        principal = Principal(*row) if row else None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now + CACHE_TTL_S, principal)
        return principal

    async def authenticate(self, request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("send Authorization: Bearer <tenant API key>", code="missing_api_key")
        principal = await self.lookup(key.strip())
        if principal is None:
            raise Unauthorized("unknown or revoked API key", code="invalid_api_key")
        return principal

    async def tenant(self, request: Request) -> Principal:
        """A tenant key (admin or read); operator keys have no tenant data to show."""
        principal = await self.authenticate(request)
        if principal.tenant_id is None:
            raise Forbidden("this endpoint needs a tenant API key", code="tenant_key_required")
        return principal
