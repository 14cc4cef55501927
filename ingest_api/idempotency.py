"""Batch idempotency with the ``Idempotency-Key`` request header (CONTRACT 4.5).

Scoped per source. The first request with a key marks it in flight; its answer is kept for
``STRATUM_IDEMPOTENCY_TTL_S`` and replayed to a retry with the same key and the same
decompressed body. Same key, different body: 422. Same key while the first is in flight:
409. Only 2xx and deterministic 4xx answers are kept (never 429 or 503, which a retry
should redo). If the process dies mid-request, the in-flight mark expires after
``STRATUM_IDEMPOTENCY_LOCK_S`` and a retry runs again (event dedupe keys keep that safe).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Awaitable, Callable

import msgspec
import redis.exceptions
from litestar import MediaType, Request, Response

from ingest_api.auth import Source
from ingest_api.errors import IngestError, Unavailable, error_body, ingest_error_response

MAX_KEY_CHARS = 255
_NOT_KEPT = frozenset({408, 429, 503})


class _Entry(msgspec.Struct, omit_defaults=True):
    state: str  # "inflight" | "done"
    body_hash: str
    status: int = 0
    body: str = ""


def _redis_key(source_id: str, key: str) -> str:
    return f"stratum:idem:{source_id}:{hashlib.sha256(key.encode()).hexdigest()}"


def _conflict(status: int, code: str, message: str) -> Response:
    return Response(error_body(code, message, status), status_code=status, media_type=MediaType.JSON)


async def idempotent(request: Request, source: Source, body: bytes, ttl_s: int, lock_s: int, retry_after_s: int,
                     produce: Callable[[], Awaitable[Response]]) -> Response:
    """Run ``produce`` at most once per (source, Idempotency-Key, body)."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return await produce()
    key = key.strip().strip('"')
    if not key or len(key) > MAX_KEY_CHARS:
        raise IngestError(f"Idempotency-Key must be 1..{MAX_KEY_CHARS} characters", code="invalid_idempotency_key")
    client = request.app.state.ingest.redis
    rkey = _redis_key(source.id, key)
    body_hash = hashlib.sha256(body).hexdigest()
    try:
        claimed = await client.set(rkey, msgspec.json.encode(_Entry("inflight", body_hash)), nx=True, ex=lock_s)
        if not claimed:
            raw = await client.get(rkey)
            if raw is not None:
                entry = msgspec.json.decode(raw, type=_Entry)
                if entry.body_hash != body_hash:
                    return _conflict(422, "idempotency_key_reused",
                                     "this Idempotency-Key was used with a different body; use a new key")
                if entry.state == "inflight":
                    return _conflict(409, "idempotency_key_in_flight",
                                     "a request with this Idempotency-Key is still being processed; retry shortly")
                return Response(entry.body.encode(), status_code=entry.status, media_type=MediaType.JSON,
                                headers={"Idempotent-Replayed": "true"})
            # expired between SET and GET: claim again
            await client.set(rkey, msgspec.json.encode(_Entry("inflight", body_hash)), ex=lock_s)
    except (redis.exceptions.RedisError, OSError):
        raise Unavailable("queue unreachable, nothing was accepted", retry_after_s=retry_after_s,
                          code="queue_unavailable") from None

    try:
        try:
            response = await produce()
        except IngestError as exc:
            response = ingest_error_response(request, exc)
    except BaseException:
        await _forget(client, rkey)
        raise
    status = response.status_code
    if (200 <= status < 300 or 400 <= status < 500) and status not in _NOT_KEPT:
        content = response.content if isinstance(response.content, bytes) else msgspec.json.encode(response.content)
        # If this write fails the answer still stands; a retry after the in-flight mark
        # expires runs again and is deduped by the event keys.
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            await client.set(rkey, msgspec.json.encode(_Entry("done", body_hash, status, content.decode())), ex=ttl_s)
    else:
        await _forget(client, rkey)
    return response


async def _forget(client, rkey: str) -> None:
    with contextlib.suppress(redis.exceptions.RedisError, OSError):
        await client.delete(rkey)
