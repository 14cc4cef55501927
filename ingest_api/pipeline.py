"""What every ingest route shares after parsing: authenticate, queue, answer.

Routes turn their wire format into ``core.intake`` results; ``queue_events`` writes the
accepted ones as one job (dedupe marks included) and reports which were duplicates.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import redis.exceptions
import uuid_utils
from redis.asyncio import Redis

from core.dedupe import dedupe_digest, dedupe_scope
from core.intake import Accepted
from core.schemas import QUEUE_FORMAT_VERSION, QueuedBatch, encode_batch_header, encode_event
from ingest_api.auth import Source
from ingest_api.enqueue import BatchEnqueuer, PendingEvent
from ingest_api.errors import BadRequest, PayloadTooLarge, RateLimited, Unavailable


def check_batch_size(n: int, max_events: int, field: str) -> None:
    """Every ingest route's bounds on one request's events: 400 ``empty_batch`` for none,
    413 ``too_many_events`` past ``max_events`` (``field``: how the route names its list)."""
    if n == 0:
        raise BadRequest(f"{field} must hold at least one event", code="empty_batch")
    if n > max_events:
        raise PayloadTooLarge(f"{n} events; at most {max_events} per request", code="too_many_events")

def new_event_id() -> str:
    """A time-ordered UUID (v7): event ids sort by arrival."""
    return str(uuid_utils.uuid7())


@dataclass(frozen=True)
class QueueOutcome:
    # per accepted event, in order: None if queued, else the event id seen first
    duplicates_of: list[str | None]


async def queue_events(
    enqueuer: BatchEnqueuer,
    source: Source,
    pending: list[PendingEvent],
    received_at: datetime,
    request_id: str,
    retry_after_s: int,
    default_rate_limit: int,
    context: dict | None = None,
    integrations: dict | None = None,
) -> QueueOutcome:
    """Queue the accepted events durably, or raise Unavailable / RateLimited (then nothing
    was queued and no dedupe mark was set)."""
    if not pending:
        return QueueOutcome([])
    header = encode_batch_header(
        QueuedBatch(
            version=QUEUE_FORMAT_VERSION, tenant_id=source.tenant_id, source_id=source.id,
            source_type=source.type, phone_region=source.phone_region, received_at=received_at,
            request_id=request_id, context=context, integrations=integrations, events=[],
        )
    )
    try:
        rate_limit = source.rate_limit if source.rate_limit is not None else default_rate_limit
        result = await enqueuer.enqueue(new_event_id(), source.tenant_id, source.id, rate_limit, header, pending)
    except redis.exceptions.TimeoutError:
        # The script may still run once Redis answers again: say so. A retry is safe, its
        # events come back as duplicates if the first attempt did land.
        raise Unavailable("queue did not answer in time; the batch may not be queued: retry it (event dedupe "
                          "keys make the retry safe)", retry_after_s=retry_after_s, code="queue_unavailable") from None
    except (redis.exceptions.ConnectionError, OSError) as exc:
        raise Unavailable(f"queue unreachable, nothing was accepted: {type(exc).__name__}",
                          retry_after_s=retry_after_s, code="queue_unavailable") from None
    except redis.exceptions.ResponseError as exc:
        # OOM and similar refusals: Redis ran nothing, so nothing was queued.
        raise Unavailable(f"queue refused the write, nothing was accepted: {exc}",
                          retry_after_s=retry_after_s, code="queue_unavailable") from None
    if result.queue_full:
        raise Unavailable("queue is above its high-water mark; retry later",
                          retry_after_s=retry_after_s, code="queue_full")
    if result.rate_limited:
        raise RateLimited(f"source is over its limit of {rate_limit} events per second", retry_after_s=1)
    return QueueOutcome(result.duplicates_of)


async def redis_ready(redis_client: Redis) -> bool:
    try:
        return bool(await redis_client.ping())
    except (redis.exceptions.RedisError, OSError):
        return False


def dedupe_marker(source: Source) -> Callable[[str], str]:
    """The dedupe mark of a client key for ``source``'s events, as ``pending_event`` writes
    it; the scope is worked out once for a whole batch."""
    scope = dedupe_scope(source.type, source.id)

    def mark(client_key: str) -> str:
        # 32 bytes are 44 base64 characters, the last one "=" padding
        return binascii.b2a_base64(dedupe_digest(scope, client_key), newline=False)[:43].decode("ascii")

    return mark


def pending_event(source: Source, blob: bytes, event_id: str, client_key: str | None) -> PendingEvent:
    """An event to queue, its dedupe mark keyed by the SHA-256 of its key in the source's
    dedupe scope (core.dedupe): the tenant for server-side sources, the source itself for
    website sources. The key itself is never written to Redis outside the job. The digest
    goes in base64 (43 characters: Redis's Lua msgpack reads no binary strings, and the
    shorter field keeps each mark in a smaller allocation than hex would)."""
    if client_key is None:
        return PendingEvent(blob, event_id, None)
    return PendingEvent(blob, event_id, dedupe_marker(source)(client_key))


def pending_of(accepted: Accepted, source: Source) -> PendingEvent:
    blob = accepted.blob or encode_event(accepted.event)
    return pending_event(source, blob, accepted.event.event_id, accepted.client_dedupe_key)
