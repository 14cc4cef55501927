"""Publishing to the live stream (CONTRACT 7) from the workers.

``write_outbox`` builds the batch's messages for the stream too when a read process is
subscribed to the tenant's channel (checked at most once per ``LISTENERS_CACHE_S``) and
stashes them here; ``publish`` sends them after the transaction committed, so the stream
never shows an event that was rolled back. A batch whose transaction is retried replaces
its stash; ``discard`` drops it before each attempt.
"""

from __future__ import annotations

import logging
import time

from redis import Redis
from redis.exceptions import RedisError

from stratum.queue.deliveries import stream_channel
from workers import runtime

log = logging.getLogger(__name__)

LISTENERS_CACHE_S = 1.0

_listening: dict[str, tuple[float, bool]] = {}
_stash: dict[str, list[bytes]] = {}
_clients: dict[str, Redis] = {}


def _redis() -> Redis:
    url = runtime.current().settings.redis_url
    client = _clients.get(url)
    if client is None:
        client = _clients[url] = Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
    return client


def listening(tenant_id: str) -> bool:
    """Whether any read process streams this tenant now (cached briefly; False if Redis fails)."""
    now = time.monotonic()
    hit = _listening.get(tenant_id)
    if hit is not None and hit[0] > now:
        return hit[1]
    try:
        ((_, count),) = _redis().pubsub_numsub(stream_channel(tenant_id))
    except RedisError:
        count = 0
    if len(_listening) > 10_000:
        _listening.clear()
    _listening[tenant_id] = (now + LISTENERS_CACHE_S, count > 0)
    return count > 0


def stash(tenant_id: str, bodies: list[bytes]) -> None:
    _stash[tenant_id] = bodies


def discard(tenant_id: str) -> None:
    _stash.pop(tenant_id, None)


def publish(tenant_id: str) -> None:
    """Publish the committed batch's stashed messages; best effort (the stream does not replay)."""
    bodies = _stash.pop(tenant_id, None)
    if not bodies:
        return
    channel = stream_channel(tenant_id)
    try:
        with _redis().pipeline(transaction=False) as pipe:
            for body in bodies:
                pipe.publish(channel, body)
            pipe.execute()
    except RedisError as exc:
        log.warning("live stream publish failed for tenant %s: %s", tenant_id, exc)
