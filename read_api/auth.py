"""Tenant and operator API keys (``Authorization: Bearer KEY``), looked up by hash.

Lookups (found or not) are served from memory for ``ttl_s`` (``STRATUM_READ_KEY_CACHE_TTL_S``,
default and maximum 1 s), so a request costs a dict probe, and a key costs one SHA-256 and
one indexed query per process per TTL. Revocation is effective everywhere within the TTL:
every entry expires at most ``ttl_s`` after it was read, and a revoked key is never read
back as valid (CONTRACT section 3: within one second).

The memory cache is keyed by the key as sent, so a hit needs no SHA-256 (which cost a
lookup more than the rest of the key check, docs/PERFORMANCE.md). A key is held there only
as long as its entry lives (at most ``ttl_s``, and the cache is emptied past 10,000
entries), in this process's memory, like the request that carried it; it is never written
anywhere, and the database only ever sees its hash.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler
from psycopg_pool import AsyncConnectionPool

from read_api.autocommit import fetch_one
from read_api.errors import Forbidden, Unauthorized
from stratum.keys import hash_key

MAX_CACHE_TTL_S = 1.0


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
    """API keys read by hash, cached per process (see the module docstring); ``pool``
    serves single statements (``read_api.autocommit``: one round trip per lookup)."""

    def __init__(self, pool: AsyncConnectionPool, ttl_s: float = MAX_CACHE_TTL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._pool = pool
        # Capped: a longer TTL would let a revoked key work past the CONTRACT's second.
        self.ttl_s = min(max(ttl_s, 0.0), MAX_CACHE_TTL_S)
        self._clock = clock
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def lookup(self, key: str) -> Principal | None:
        hit = self._cache.get(key)
        if hit is not None and hit[0] > self._clock():
            return hit[1]
        # The expiry counts from before the query, so an entry is never trusted for longer
        # than ttl_s after the snapshot it was read from.
        expires = self._clock() + self.ttl_s
        row = await fetch_one(self._pool, "SELECT id::text, role, tenant_id::text, operator_id::text FROM api_keys"
                                          " WHERE key_hash = %s AND revoked_at IS NULL", (hash_key(key),))
        principal = Principal(*row) if row else None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (expires, principal)
        return principal

    async def authenticate(self, request: ASGIConnection) -> Principal:
        scheme, _, key = authorization_header(request).partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("send Authorization: Bearer <tenant API key>", code="missing_api_key")
        principal = await self.lookup(key.strip())
        if principal is None:
            raise Unauthorized("unknown or revoked API key", code="invalid_api_key")
        return principal

    async def tenant(self, request: ASGIConnection) -> Principal:
        """A tenant key (admin or read); operator keys have no tenant data to show.

        Raises Unauthorized (401) for a missing, unknown or revoked key, Forbidden (403) for
        an operator key.
        """
        principal = await self.authenticate(request)
        if principal.tenant_id is None:
            raise Forbidden("this endpoint needs a tenant API key", code="tenant_key_required")
        return principal

    async def tenant_admin(self, request: ASGIConnection) -> Principal:
        """A tenant admin key: like ``tenant`` and also Forbidden (403, ``read_only_key``)
        for a read key. Checked before the object is looked up, so a read key learns
        nothing about which ids exist."""
        principal = await self.tenant(request)
        principal.require_write()
        return principal


def authorization_header(connection: ASGIConnection) -> str:
    """The ``Authorization`` header ("" without one), read from the raw ASGI headers: on
    the lookup path, building Litestar's ``Headers`` for one header costs more than the
    key check itself. Like Litestar, the first of repeated headers counts."""
    for name, value in connection.scope["headers"]:
        if name.lower() == b"authorization":
            return value.decode("latin-1")
    return ""


# The authenticated principal lives in the ASGI scope under this key (``request.state``
# would build a State object per request on the hot path).
_PRINCIPAL = "stratum.principal"


def remember_principal(connection: ASGIConnection, principal: Principal) -> None:
    """Record the principal a guard or hook authenticated, for ``principal_of``."""
    connection.scope[_PRINCIPAL] = principal  # type: ignore[literal-required]


# Route guards. Litestar runs guards before it parses the query string or the body, so
# a request without a valid key is 401 (and a read key on a change 403) whatever it sends.


async def tenant_key(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Guard: a tenant key (admin or read). The principal is then ``principal_of(request)``."""
    remember_principal(connection, await connection.app.state.read.keys.tenant(connection))


async def tenant_admin_key(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Guard: a tenant admin key (read keys get 403 ``read_only_key``)."""
    remember_principal(connection, await connection.app.state.read.keys.tenant_admin(connection))


async def tenant_key_before_request(request: Request) -> None:
    """The ``tenant_key`` guard as a ``before_request`` hook, for the hot lookup routes.

    Litestar runs ``before_request`` before it parses parameters, as it does guards, so the
    key is still checked first; but it copies the route handler for every guard call,
    which costs a lookup more than the whole key check.
    """
    remember_principal(request, await request.app.state.read.keys.tenant(request))


def principal_of(request: Request) -> Principal:
    """The principal a guard authenticated for this request."""
    return request.scope[_PRINCIPAL]  # type: ignore[literal-required]
