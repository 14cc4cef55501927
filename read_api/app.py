"""The read API application: ``create_app()`` wires settings, pools and routes."""

from __future__ import annotations

from contextlib import asynccontextmanager, suppress

import msgspec
import redis.exceptions
from litestar import Litestar, Request, Response, get
from litestar.exceptions import HTTPException
from psycopg import AsyncConnection
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from core.errors import StratumError
from read_api.anomalies import list_anomalies
from read_api.auth import KeyDirectory
from read_api.autocommit import statement_pool
from read_api.computed_traits import COMPUTED_TRAIT_ROUTES
from read_api.consents import get_consents, put_consents
from read_api.deliveries import DELIVERY_ROUTES
from read_api.destinations import DESTINATION_ROUTES
from read_api.erasure import erase_profile
from read_api.errors import (
    UNAVAILABLE_ERRORS,
    ApiError,
    api_error_response,
    body_incomplete_response,
    body_timeout_response,
    domain_error_response,
    http_exception_response,
    too_deep_response,
    unavailable_response,
    unexpected_error_response,
)
from read_api.events import event_status, profile_events
from read_api.export_slots import ExportSlots
from read_api.exports import export_events, export_profiles
from read_api.graph import profile_graph
from read_api.identity import explain_identity, profile_decisions
from read_api.identity_dry_run import identity_dry_run
from read_api.metrics import ReadMetrics, metrics_middleware
from read_api.ops import OPS_ROUTES
from read_api.ops_destinations import OPS_DESTINATION_ROUTES
from read_api.ops_volume import ops_volume
from read_api.pages import PAGE_ROUTES
from read_api.profiles import find_profile, get_profile
from read_api.segments import SEGMENT_ROUTES
from read_api.sources import (
    create_source,
    list_sources,
    rotate_identity_secret,
    rotate_key,
    update_source,
)
from read_api.state import ReadState
from read_api.stats import tenant_stats
from read_api.stream import STREAM_ROUTES
from read_api.unmerge import unmerge_profile
from stratum.apidocs import openapi_config
from stratum.index_page import index_route
from stratum.request_body import BodyIncomplete, BodyTimeout, guard_request_body
from stratum.settings import Settings, get_settings, libpq_url

ROUTES = [
    get_profile, find_profile, profile_events, profile_graph, get_consents, put_consents, erase_profile,
    unmerge_profile,
    event_status, list_sources, create_source, update_source, rotate_key, rotate_identity_secret,
    export_profiles, export_events,
    tenant_stats, list_anomalies, *SEGMENT_ROUTES, *COMPUTED_TRAIT_ROUTES, profile_decisions, explain_identity, identity_dry_run, *DESTINATION_ROUTES, *DELIVERY_ROUTES,
]


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


@get("/metrics", summary="Prometheus metrics", media_type="text/plain; version=0.0.4")
async def metrics(request: Request) -> Response:
    st: ReadState = request.app.state.read
    return Response(st.metrics.render(), media_type="text/plain; version=0.0.4")


INDEX = index_route("Stratum CDP read API", [
    ("/profiles", "Profiles: search and inspect (tenant key)"),
    ("/segments", "Segment builder (tenant key)"),
    ("/ops", "Operations: queue, workers, failures (operator key)"),
    ("/cdp-calculator", "CDP ROI calculator"),
    ("/schema", "API documentation (OpenAPI, Swagger UI)"),
    ("/schema/openapi.json", "OpenAPI document"),
    ("/health", "Health: process alive"),
    ("/ready", "Readiness: Postgres and Redis reachable"),
    ("/metrics", "Prometheus metrics"),
])


async def _configure_connection(conn: AsyncConnection) -> None:
    """json/jsonb values are parsed by msgspec instead of the standard library: a timeline
    page parses four JSON documents per event, and msgspec does it in well under half the
    time (docs/PERFORMANCE.md). Same values: objects, arrays, strings, ints, floats."""
    set_json_loads(msgspec.json.decode, conn)


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or get_settings()
    metrics_ = ReadMetrics()

    @asynccontextmanager
    async def lifespan(app: Litestar):
        # UTC sessions: date_trunc and timestamp rendering never depend on the server's zone.
        pool = AsyncConnectionPool(libpq_url(settings.database_url), min_size=settings.db_pool_min,
                                   max_size=settings.db_pool_max, open=False,
                                   kwargs={"options": "-c TimeZone=UTC"}, configure=_configure_connection)
        statements = statement_pool(libpq_url(settings.database_url), settings.db_pool_min, settings.db_pool_max,
                                    configure=_configure_connection)
        await pool.open()
        await statements.open()
        redis = Redis.from_url(settings.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
        app.state.read = ReadState(settings, pool, statements, redis,
                                   KeyDirectory(statements, settings.read_key_cache_ttl_s), metrics_,
                                   export_slots=ExportSlots(redis, settings.export_max_per_tenant,
                                                            settings.export_lease_s))
        try:
            yield
        finally:
            hub = getattr(app.state, "stream_hub", None)
            if hub is not None:
                await hub.close()
            await redis.aclose()
            await statements.close()
            await pool.close()

    return Litestar(
        route_handlers=[*ROUTES, health, ready, metrics, *OPS_ROUTES, ops_volume, *OPS_DESTINATION_ROUTES,
                        *STREAM_ROUTES, *PAGE_ROUTES, INDEX],
        lifespan=[lifespan],
        middleware=[lambda app: metrics_middleware(app, metrics_),
                    lambda app: guard_request_body(app, settings.http_body_timeout_s)],
        exception_handlers={
            ApiError: api_error_response,
            StratumError: domain_error_response,
            HTTPException: http_exception_response,
            **dict.fromkeys(UNAVAILABLE_ERRORS, unavailable_response),
            RecursionError: too_deep_response,
            BodyTimeout: body_timeout_response,
            BodyIncomplete: body_incomplete_response,
            Exception: unexpected_error_response,
        },
        openapi_config=openapi_config("Stratum CDP read API"),
        debug=False,
    )
