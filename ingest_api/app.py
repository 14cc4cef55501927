"""The ingest API application: ``create_app()`` wires settings, pools and routes."""

from __future__ import annotations

import asyncio
import time
import uuid
from contextlib import asynccontextmanager

from litestar import Litestar, Request, Response, get
from litestar.config.cors import CORSConfig
from litestar.exceptions import HTTPException
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from ingest_api.auth import SourceDirectory
from ingest_api.enqueue import BatchEnqueuer
from ingest_api.errors import (
    IngestError,
    body_incomplete_response,
    body_timeout_response,
    http_exception_response,
    ingest_error_response,
    unexpected_error_response,
)
from ingest_api.metrics import IngestMetrics
from ingest_api.native import post_events
from ingest_api.pipeline import redis_ready
from ingest_api.posthog import POSTHOG_ROUTES
from ingest_api.segment import SEGMENT_ROUTES
from ingest_api.state import IngestState
from stratum.apidocs import openapi_config
from stratum.index_page import index_route
from stratum.queue.metrics import QueueCollector
from stratum.request_body import BodyIncomplete, BodyTimeout, guard_request_body
from stratum.settings import Settings, get_settings, global_blocked_values, libpq_url


@get("/health", summary="Process is alive", include_in_schema=True)
async def health() -> dict[str, str]:
    return {"status": "ok"}


@get("/ready", summary="Redis reachable and queue below the backpressure mark")
async def ready(request: Request) -> Response:
    st: IngestState = request.app.state.ingest
    ok = await redis_ready(st.redis)
    depth = await st.enqueuer.queue_depth() if ok else None
    if ok and depth is not None:
        st.metrics.queue_depth.set(depth)
    is_ready = ok and (st.settings.queue_high_water <= 0 or depth < st.settings.queue_high_water)
    body = {"ready": is_ready, "redis": ok, "queue_depth": depth}
    return Response(body, status_code=200 if is_ready else 503,
                    headers=None if is_ready else {"Retry-After": str(st.settings.retry_after_s)})


@get("/metrics", summary="Prometheus metrics", media_type="text/plain; version=0.0.4")
async def metrics(request: Request) -> Response:
    st: IngestState = request.app.state.ingest
    if await redis_ready(st.redis):
        st.metrics.queue_depth.set(await st.enqueuer.queue_depth())
    # The queue collector makes blocking Redis calls: keep them off the event loop.
    return Response(await asyncio.to_thread(st.metrics.render), media_type="text/plain; version=0.0.4")


INDEX = index_route("Stratum CDP ingest API", [
    ("/schema", "API documentation (OpenAPI, Swagger UI)"),
    ("/schema/openapi.json", "OpenAPI document"),
    ("/health", "Health: process alive"),
    ("/ready", "Readiness: Redis reachable, queue below the backpressure mark"),
    ("/metrics", "Prometheus metrics"),
])


def _request_context(app, metrics: IngestMetrics, known_paths: frozenset[str]):
    """ASGI middleware: echo or create ``X-Request-ID``; time and count every request
    (labelled by route; unknown paths share one label so scanners cannot explode it)."""

    async def middleware(scope, receive, send):
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        request_id = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value.decode("latin-1")[:128]
                break
        request_id = request_id or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status_holder = [500]

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        finally:
            path = scope["path"]
            metrics.observe(path if path in known_paths else "other", status_holder[0], time.perf_counter() - started)

    return middleware


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or get_settings()
    metrics_ = IngestMetrics(QueueCollector(settings))

    @asynccontextmanager
    async def lifespan(app: Litestar):
        pool = AsyncConnectionPool(libpq_url(settings.database_url), min_size=1, max_size=4, open=False)
        await pool.open()
        redis = Redis.from_url(settings.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
        enqueuer, import_enqueuer = (BatchEnqueuer(
            redis, name, dedupe_window_s=settings.dedupe_window_s,
            job_timeout_s=settings.job_timeout_s, failed_job_ttl_s=settings.failed_job_ttl_s,
            high_water=settings.queue_high_water,
        ) for name in (settings.queue_name, settings.import_queue))
        app.state.ingest = IngestState(settings, pool, redis, enqueuer, SourceDirectory(pool, global_blocked_values(settings)), metrics_,
                                       import_enqueuer)
        try:
            yield
        finally:
            await redis.aclose()
            await pool.close()

    handlers = [post_events, *SEGMENT_ROUTES, *POSTHOG_ROUTES, health, ready, metrics, INDEX]
    known_paths = frozenset(p for h in handlers for p in h.paths)
    return Litestar(
        route_handlers=handlers,
        lifespan=[lifespan],
        middleware=[lambda app: _request_context(app, metrics_, known_paths),
                    lambda app: guard_request_body(app, settings.http_body_timeout_s)],
        exception_handlers={
            IngestError: ingest_error_response,
            HTTPException: http_exception_response,
            BodyTimeout: body_timeout_response,
            BodyIncomplete: body_incomplete_response,
            Exception: unexpected_error_response,
        },
        request_max_body_size=settings.max_request_bytes,
        # Write keys ship in browsers: any origin may call; sources that list allowed
        # origins are enforced per request (ingest_api.auth.check_origin).
        cors_config=CORSConfig(allow_origins=["*"], allow_methods=["GET", "POST", "OPTIONS"],
                               allow_headers=["*"], max_age=3600),
        openapi_config=openapi_config("Stratum CDP ingest API"),
        debug=False,
    )
