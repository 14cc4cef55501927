"""Dead-letter store for unusable Segment events: kept 7 days (configurable) per tenant,
capped in length, shown by ``/ops``. Written only when a request has rejections."""

from __future__ import annotations

from datetime import datetime

import msgspec
import redis.exceptions
from redis.asyncio import Redis

from core.cache_keys import deadletter_key
from core.intake import Rejection

MAX_ENTRIES_PER_TENANT = 10_000
MAX_STORED_EVENT_BYTES = 32 * 1024


async def store_rejections(client: Redis, tenant_id: str, source_id: str, received_at: datetime, request_id: str,
                           rejected: list[tuple[int, Rejection, bytes]], ttl_s: int) -> bool:
    """Keep the unusable events; False when Redis refused (the answer still lists them)."""
    if not rejected:
        return True
    entries = [
        msgspec.json.encode({
            "received_at": received_at.isoformat(), "source_id": source_id, "request_id": request_id,
            "index": i, "code": r.code, "message": r.message,
            "event": raw[:MAX_STORED_EVENT_BYTES].decode("utf-8", "replace"),
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
