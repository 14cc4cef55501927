"""The baseline for the ingest benchmark: the least an ingest endpoint can do with the same
stack (Litestar + msgspec decode + one Redis RPUSH), served the same way."""

from __future__ import annotations

import os
from contextlib import asynccontextmanager

import msgspec
from litestar import Litestar, Request, Response, post
from redis.asyncio import Redis


class _Envelope(msgspec.Struct):
    batch: list[msgspec.Raw]


_decoder = msgspec.json.Decoder(_Envelope)


@post("/v1/batch", status_code=200)
async def bare_batch(request: Request) -> Response:
    body = await request.body()
    _decoder.decode(body)
    await request.app.state.redis.rpush("bench:bare", body)
    return Response(b'{"success":true}', media_type="application/json")


def create_app() -> Litestar:
    @asynccontextmanager
    async def lifespan(app: Litestar):
        app.state.redis = Redis.from_url(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/10"))
        yield
        await app.state.redis.aclose()

    return Litestar([bare_batch], lifespan=[lifespan])
