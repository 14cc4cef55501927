"""Dead-letter store for unusable Segment events: kept 7 days (configurable) per tenant,
capped in length, shown by ``/ops``. Written only when a request has rejections.

An entry holds the event in scrubbed form (``core.privacy.scrub_document``): no raw email
or phone, no write key, no identity signature (CONTRACT 6); an event that is not JSON is
not kept (``"event": null``)."""

from __future__ import annotations

from datetime import datetime

import msgspec
import redis.exceptions
from redis.asyncio import Redis

from core.cache_keys import deadletter_key
from core.intake import Rejection
from core.privacy import scrub_document

MAX_ENTRIES_PER_TENANT = 10_000
MAX_STORED_EVENT_BYTES = 32 * 1024


async def store_rejections(client: Redis, tenant_id: str, source_id: str, received_at: datetime, request_id: str,
                           rejected: list[tuple[int, Rejection, bytes]], ttl_s: int,
                           phone_region: str | None = None) -> bool:
    """Keep the unusable events, scrubbed; False when Redis refused (the answer still lists
    them). ``phone_region``: the source's, to hash national phone numbers as identifiers."""
    if not rejected:
        return True
    entries = [
        msgspec.json.encode({
            "received_at": received_at.isoformat(), "source_id": source_id, "request_id": request_id,
            "index": i, "code": r.code, "message": r.message,
            "event": _stored_event(raw, phone_region),
        })
        for i, r, raw in rejected
    ]
    key = deadletter_key(tenant_id)
    try:
        async with client.pipeline(transaction=False) as pipe:
            pipe.lpush(key, *entries)
            pipe.ltrim(key, 0, MAX_ENTRIES_PER_TENANT - 1)
            pipe.expire(key, ttl_s)
            await pipe.execute()
    except (redis.exceptions.RedisError, OSError):
        return False
    return True


def _stored_event(raw: bytes, phone_region: str | None) -> str | None:
    scrubbed = scrub_document(raw, phone_region)
    if scrubbed is None or len(scrubbed) <= MAX_STORED_EVENT_BYTES:
        return scrubbed
    return scrubbed[:MAX_STORED_EVENT_BYTES]
