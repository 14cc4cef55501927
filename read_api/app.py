"""The read API application: ``create_app()`` wires settings, pools and routes."""

from __future__ import annotations

from contextlib import asynccontextmanager, suppress

import redis.exceptions
from litestar import Litestar, Request, Response, get
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from read_api.auth import KeyDirectory
from read_api.errors import (
    ApiError,
    api_error_response,
    http_exception_response,
    unexpected_error_response,
)
from read_api.profiles import find_profile, get_profile
from read_api.state import ReadState
from stratum.settings import Settings, get_settings, libpq_url


@get("/health", summary="Process is alive")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@get("/ready", summary="Postgres and Redis reachable")
async def ready(request: Request) -> Response:
    st: ReadState = request.app.state.read
    db_ok = redis_ok = False
    try:
        async with st.pool.connection(timeout=2.0) as conn:
            await conn.execute("SELECT 1")
        db_ok = True
    except Exception:  # noqa: BLE001 - readiness reports, never raises
        pass
    with suppress(redis.exceptions.RedisError, OSError):
        redis_ok = bool(await st.redis.ping())
    ok = db_ok and redis_ok
    return Response({"ready": ok, "postgres": db_ok, "redis": redis_ok}, status_code=200 if ok else 503)


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: Litestar):
        pool = AsyncConnectionPool(libpq_url(settings.database_url), min_size=settings.db_pool_min,
                                   max_size=settings.db_pool_max, open=False)
        await pool.open()
        redis = Redis.from_url(settings.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
        app.state.read = ReadState(settings, pool, redis, KeyDirectory(pool))
        try:
            yield
        finally:
            await redis.aclose()
            await pool.close()

    return Litestar(
        route_handlers=[get_profile, find_profile, health, ready],
        lifespan=[lifespan],
        exception_handlers={
            ApiError: api_error_response,
            HTTPException: http_exception_response,
            Exception: unexpected_error_response,
        },
        openapi_config=OpenAPIConfig(title="Stratum CDP read API", version="1", path="/schema",
                                     render_plugins=[SwaggerRenderPlugin()]),
        debug=False,
    )
