"""Operator JSON endpoints behind the /ops page: queue, workers, throughput, failed jobs
(with replay) and dead letters. Every route needs an operator key
(``stratum operator create NAME``): no or a bad key is 401, a tenant key 403.

Redis work uses the synchronous queue status API (``stratum/queue/status.py``), run in a
worker thread with a short-lived client per request, so the event loop never blocks.

Throughput, both in events per second, over all tenants:

- ``events_in_per_s``: events that entered through the ingest API during the last
  ``THROUGHPUT_WINDOW_S`` seconds, counted from their time-ordered ids (UUIDv7, assigned at
  ingest) in ``event_keys`` (one row per stored event; the unique index on ``event_id``
  makes this a range scan). Events still waiting in the queue are counted once a worker
  has stored them; until then the queue depth shows them.
- ``events_out_per_s``: events written by the workers per second, from the insert counter
  Postgres keeps for ``event_keys`` (``pg_stat_user_tables.n_tup_ins``), sampled by this
  process at each call; null until two samples are at least ``MIN_SAMPLE_GAP_S`` apart.
  Postgres publishes a busy worker connection's counters about once a second, and those of
  a connection gone idle after about 10 s, so the tail of a burst shows up late.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import anyio.to_thread
import msgspec
from litestar import Request, get, post
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler
from litestar.params import FromPath, FromQuery
from redis import Redis

from core.cache_keys import deadletter_key
from read_api.auth import remember_principal
from read_api.errors import BadRequest, Forbidden, NotFound
from read_api.openapi import errors_for
from read_api.state import ReadState
from stratum.queue.status import (
    failed_job_count,
    failed_jobs,
    queue_status,
    requeue_failed,
    workers_status,
)

THROUGHPUT_WINDOW_S = 60
MIN_SAMPLE_GAP_S = 1.0
DEFAULT_FAILED_LIMIT = 100
MAX_FAILED_LIMIT = 1000
REDIS_TIMEOUT_S = 2.0
_JOB_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


class WorkerInfo(msgspec.Struct):
    name: str
    state: str
    alive: bool  # its stratum heartbeat is fresh (stratum/queue/liveness.py)
    queues: list[str]
    current_job_id: str | None
    successful_jobs: int
    failed_jobs: int
    birth: str | None
    last_heartbeat: str | None


class Throughput(msgspec.Struct):
    events_in_per_s: float
    events_out_per_s: float | None
    window_s: int


class DeadLetters(msgspec.Struct):
    tenant_id: str
    tenant_name: str
    count: int
    latest_at: str | None


class OpsStatus(msgspec.Struct):
    """``queues`` is ``stratum status --json``'s: {NAME: {queued, started, scheduled, failed,
    oldest_queued_age_s}}; dead letters are listed for tenants that have any."""

    at: str
    queues: dict[str, dict[str, Any]]
    workers: list[WorkerInfo]
    throughput: Throughput
    dead_letters: list[DeadLetters]


class FailedJob(msgspec.Struct):
    job_id: str
    reason: str
    enqueued_at: str | None
    ended_at: str | None
    worker_name: str | None


class FailedJobs(msgspec.Struct):
    failed: list[FailedJob]
    total: int


class Replayed(msgspec.Struct):
    replayed: int
    not_replayed: list[dict[str, str]] = msgspec.field(default_factory=list)


async def operator_key(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Guard: an operator key. 401 without a valid key, 403 (``operator_key_required``) for a tenant key."""
    principal = await connection.app.state.read.keys.authenticate(connection)
    if principal.role != "operator":
        raise Forbidden("this endpoint needs an operator key (stratum operator create NAME)",
                        code="operator_key_required")
    remember_principal(connection, principal)


def _iso(ts: datetime | None) -> str | None:
    return ts.astimezone(UTC).isoformat() if ts else None


def _redis(st: ReadState) -> Redis:
    return Redis.from_url(st.settings.redis_url, socket_timeout=REDIS_TIMEOUT_S,
                          socket_connect_timeout=REDIS_TIMEOUT_S)


def _redis_status(st: ReadState, tenant_ids: list[str]) -> tuple[dict, list[WorkerInfo], list[tuple[int, bytes | None]]]:
    """Queue counts, the queue's workers, and (length, newest entry) of each tenant's dead letters."""
    with _redis(st) as conn:
        queues = queue_status(st.settings, conn)["queues"]
        workers = workers_status(st.settings, conn)
        with conn.pipeline(transaction=False) as pipe:
            for tenant_id in tenant_ids:
                pipe.llen(deadletter_key(tenant_id))
                pipe.lindex(deadletter_key(tenant_id), 0)
            letters = pipe.execute()
    infos = [WorkerInfo(**{**w, "birth": _iso(w["birth"]), "last_heartbeat": _iso(w["last_heartbeat"])})
             for w in workers]
    return queues, infos, list(zip(letters[::2], letters[1::2], strict=True))


@dataclass
class _InsertSample:
    at: float  # time.monotonic()
    inserted: int


def _out_rate(request: Request, inserted: int | None) -> float | None:
    """Events stored per second since this process's previous sample (None without one)."""
    if inserted is None:
        return None
    now = time.monotonic()
    prev: _InsertSample | None = getattr(request.app.state, "ops_insert_sample", None)
    if prev is not None and now - prev.at < MIN_SAMPLE_GAP_S:
        return getattr(request.app.state, "ops_out_rate", None)
    rate = None
    if prev is not None and inserted >= prev.inserted:  # a stats reset makes the counter go back
        rate = round((inserted - prev.inserted) / (now - prev.at), 2)
    request.app.state.ops_insert_sample = _InsertSample(now, inserted)
    request.app.state.ops_out_rate = rate
    return rate


def _uuid7_floor(unix_s: float) -> uuid.UUID:
    """The smallest UUIDv7 of a millisecond: ids of later events sort above it."""
    return uuid.UUID(int=int(unix_s * 1000) << 80)


@get("/api/v1/ops/status", guards=[operator_key], summary="Queue, workers, throughput and dead letters (operator key)",
     responses=errors_for(401, 403, 503), tags=["ops"])
async def ops_status(request: Request) -> OpsStatus:
    st: ReadState = request.app.state.read
    since = _uuid7_floor(time.time() - THROUGHPUT_WINDOW_S)
    async with st.pool.connection() as conn, conn.pipeline():
        # Per tenant, so each count is a range of the (tenant_id, event_id) unique index.
        received_cur = await conn.execute(
            "SELECT coalesce(sum(n), 0)::bigint FROM tenants t CROSS JOIN LATERAL"
            " (SELECT count(*) AS n FROM event_keys k WHERE k.tenant_id = t.id AND k.event_id >= %s) c", (since,))
        inserted_cur = await conn.execute(
            "SELECT n_tup_ins FROM pg_stat_user_tables WHERE relid = 'event_keys'::regclass")
        tenants_cur = await conn.execute("SELECT id::text, name FROM tenants ORDER BY name, id")
    received = (await received_cur.fetchone())[0]
    inserted_row = await inserted_cur.fetchone()
    tenants = await tenants_cur.fetchall()
    queues, workers, letters = await anyio.to_thread.run_sync(
        partial(_redis_status, st, [t for t, _ in tenants]))
    dead_letters = []
    for (tenant_id, name), (count, newest) in zip(tenants, letters, strict=True):
        if count:
            latest = msgspec.json.decode(newest).get("received_at") if newest else None
            dead_letters.append(DeadLetters(tenant_id, name, count, latest))
    return OpsStatus(
        at=datetime.now(UTC).isoformat(),
        queues=queues,
        workers=workers,
        throughput=Throughput(round(received / THROUGHPUT_WINDOW_S, 2),
                              _out_rate(request, inserted_row[0] if inserted_row else None), THROUGHPUT_WINDOW_S),
        dead_letters=dead_letters,
    )


def _failed_jobs(st: ReadState, limit: int) -> FailedJobs:
    with _redis(st) as conn:
        jobs = failed_jobs(st.settings, conn, limit)
        total = failed_job_count(st.settings, conn)
    return FailedJobs(failed=[FailedJob(**j) for j in jobs], total=total)


@get("/api/v1/ops/failed", guards=[operator_key], summary="Failed jobs with their reasons (operator key)",
     description="Most recent first; `reason` is the last line of the job's exception. Payloads are not shown.",
     responses=errors_for(400, 401, 403, 503), tags=["ops"])
async def ops_failed(request: Request, limit: FromQuery[int] = DEFAULT_FAILED_LIMIT) -> FailedJobs:
    if not 1 <= limit <= MAX_FAILED_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_FAILED_LIMIT}", code="invalid_limit")
    return await anyio.to_thread.run_sync(partial(_failed_jobs, request.app.state.read, limit))


def _replay(st: ReadState, job_ids: list[str] | None) -> Replayed:
    """Re-enqueue failed jobs (all when ``job_ids`` is None); safe, processing is idempotent."""
    with _redis(st) as conn:
        return Replayed(*requeue_failed(st.settings, job_ids, conn))


@post("/api/v1/ops/failed/{job_id:str}/replay", guards=[operator_key], status_code=200,
      summary="Re-enqueue one failed job (operator key)", responses=errors_for(401, 403, 404, 503), tags=["ops"])
async def ops_replay_job(request: Request, job_id: FromPath[str]) -> Replayed:
    if not _JOB_ID.match(job_id):
        raise NotFound(f"no failed job {job_id!r}")
    result = await anyio.to_thread.run_sync(partial(_replay, request.app.state.read, [job_id]))
    if not result.replayed:
        raise NotFound(f"no failed job {job_id!r} (already replayed or expired)", code="no_such_failed_job")
    return result


@post("/api/v1/ops/failed/replay-all", guards=[operator_key], status_code=200,
      summary="Re-enqueue every failed job (operator key)", responses=errors_for(401, 403, 503), tags=["ops"])
async def ops_replay_all(request: Request) -> Replayed:
    return await anyio.to_thread.run_sync(partial(_replay, request.app.state.read, None))


OPS_ROUTES = [ops_status, ops_failed, ops_replay_job, ops_replay_all]
