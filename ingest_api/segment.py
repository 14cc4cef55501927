"""Segment- and RudderStack-compatible routes (CONTRACT 4.2).

Success is exactly ``200 {"success": true}`` (SDKs treat any other 2xx as failure); when
some events are unusable the body also lists them under ``rejected``. Errors are
``{"code", "message"}`` JSON, which the SDKs parse.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Any

import msgspec
from litestar import MediaType, Request, Response, post

from core.event_time import oldest_event_time
from core.intake import Rejection, contains_nul
from core.schemas import QueuedSegmentEvent, encode_event, encode_event_value
from core.segment import screen_segment_event
from core.segment_screen import ScreenMemo
from ingest_api.auth import Source, check_origin
from ingest_api.body import decode_body, decode_envelope
from ingest_api.deadletter import store_rejections
from ingest_api.enqueue import PendingEvent
from ingest_api.errors import BadRequest, PayloadTooLarge
from ingest_api.idempotency import idempotent
from ingest_api.pipeline import check_batch_size, dedupe_marker, new_event_id
from ingest_api.state import IngestState, authenticate_request


class BatchEnvelope(msgspec.Struct):
    batch: list[msgspec.Raw]
    sentAt: str | None = None  # noqa: N815 - wire names
    writeKey: str | None = None  # noqa: N815
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None


class SingleEnvelope(msgspec.Struct):
    writeKey: str | None = None  # noqa: N815
    sentAt: str | None = None  # noqa: N815


_batch_decoder = msgspec.json.Decoder(BatchEnvelope)
_single_decoder = msgspec.json.Decoder(SingleEnvelope)
_SUCCESS = b'{"success":true}'


def _check_batch_context(ctx: dict | None, integ: dict | None, max_event_bytes: int) -> int:
    """Top-level ``context``/``integrations`` are merged into every event by the workers,
    so what the per-event screen rejects must be rejected here for the whole request.

    Returns their size in bytes, which counts toward every event's limit (a 200 KB batch
    context copied into 200 events stored 40 MB from one request); raises
    PayloadTooLarge when they alone exceed one event's limit."""
    shared = 0
    for name, value in (("context", ctx), ("integrations", integ)):
        if not value:
            continue
        if contains_nul(value):
            raise BadRequest(f"{name} must not contain \\u0000", code="nul_character")
        try:
            encode_event_value(value)
        except OverflowError:
            raise BadRequest(f"{name} holds an integer beyond 64 bits; send it as a string",
                             code="number_out_of_range") from None
        shared += len(msgspec.json.encode(value))
    if shared > max_event_bytes:
        raise PayloadTooLarge(f"the batch-level context and integrations are {shared} bytes; they are copied into "
                              f"every event, whose limit is {max_event_bytes} bytes", code="context_too_large")
    return shared


def _without_write_key(body: bytes) -> bytes:
    """A single-event body without its ``writeKey``: the event is queued as it came, and
    the queue never holds a write key (CONTRACT 6). A body that does not decode is returned
    as it is: the event screen rejects it, and its dead letter is scrubbed."""
    try:
        doc = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return body
    if not isinstance(doc, dict) or "writeKey" not in doc:
        return body
    del doc["writeKey"]
    return msgspec.json.encode(doc)


async def _handle(request: Request, path_type: str | None) -> Response:
    st: IngestState = request.app.state.ingest
    settings = st.settings
    received_at = datetime.now(UTC)
    header_key = await st.header_key(request)
    body = decode_body(await request.body(), request.headers.get("content-encoding"), settings.max_request_bytes)
    if path_type is None:
        env = decode_envelope(_batch_decoder, body, '{"batch": [...]}')
        raws, sent_at, ctx, integ = env.batch, env.sentAt, env.context, env.integrations
    else:
        env = decode_envelope(_single_decoder, body, "a JSON object")
        event = _without_write_key(body) if env.writeKey is not None else body
        raws, sent_at, ctx, integ = [msgspec.Raw(event)], env.sentAt, None, None
    shared_bytes = _check_batch_context(ctx, integ, settings.max_event_bytes)
    source = await authenticate_request(st, header_key, env.writeKey)
    check_origin(source, request.headers.get("origin"))
    return await idempotent(request, source, body, settings.idempotency_ttl_s, settings.idempotency_lock_s,
                            settings.retry_after_s,
                            lambda: _process(st, request, source, path_type, raws, sent_at, ctx, integ, received_at,
                                             shared_bytes))


async def _process(st: IngestState, request: Request, source: Source, path_type: str | None,
                   raws: list[msgspec.Raw], sent_at: str | None, ctx: dict | None, integ: dict | None,
                   received_at: datetime, shared_bytes: int) -> Response:
    settings = st.settings
    check_batch_size(len(raws), settings.max_events_per_request, "batch")

    pending: list[PendingEvent] = []
    rejected: list[tuple[int, Rejection, bytes]] = []
    screen = partial(screen_segment_event, path_type=path_type, batch_sent_at=sent_at, received_at=received_at,
                     max_event_bytes=settings.max_event_bytes, max_future_s=settings.max_future_skew_s,
                     phone_region=source.phone_region,
                     oldest_event_time=oldest_event_time(received_at, settings.retention_months),
                     shared_bytes=shared_bytes, extra_blocked=source.extra_blocked, memo=ScreenMemo())
    mark = dedupe_marker(source)
    for i, raw in enumerate(raws):
        raw_bytes = bytes(raw)
        screened = screen(raw_bytes)
        if type(screened) is Rejection:
            rejected.append((i, screened, raw_bytes))
            continue
        event_id = new_event_id()
        key = screened.dedupe_key
        blob = encode_event(QueuedSegmentEvent(event_id, key or event_id, screened.event_type, screened.event_time,
                                               raw_bytes))
        pending.append(PendingEvent(blob, event_id, mark(key) if key is not None else None))
    request_id = request.state.request_id
    queued = await st.queue(source, pending, received_at, request_id, ctx, integ)
    n_dup = sum(1 for d in queued.duplicates_of if d is not None)
    st.metrics.count_events(len(pending) - n_dup, len(rejected), n_dup)
    if not rejected:
        return Response(content=_SUCCESS, status_code=200, media_type=MediaType.JSON)
    await store_rejections(st.redis, source.tenant_id, source.id, received_at, request_id, rejected,
                           settings.dead_letter_ttl_s, source.phone_region)
    listed = [{"index": i, "code": r.code, "message": r.message} for i, r, _ in rejected]
    if not pending:
        body_out = {"code": "no_usable_events", "message": "every event was unusable; see rejected",
                    "status": 400, "rejected": listed}
        return Response(content=msgspec.json.encode(body_out), status_code=400, media_type=MediaType.JSON)
    return Response(content=msgspec.json.encode({"success": True, "rejected": listed}), status_code=200,
                    media_type=MediaType.JSON)


_OPTS = {"status_code": 200, "tags": ["segment"]}


@post(["/v1/batch", "/v1/import", "/v1/b"], summary="Segment/RudderStack batch", **_OPTS)
async def segment_batch(request: Request) -> Response:
    return await _handle(request, None)


@post("/v1/track", summary="Segment track", **_OPTS)
async def segment_track(request: Request) -> Response:
    return await _handle(request, "track")


@post("/v1/identify", summary="Segment identify", **_OPTS)
async def segment_identify(request: Request) -> Response:
    return await _handle(request, "identify")


@post("/v1/page", summary="Segment page", **_OPTS)
async def segment_page(request: Request) -> Response:
    return await _handle(request, "page")


@post("/v1/screen", summary="Segment screen", **_OPTS)
async def segment_screen(request: Request) -> Response:
    return await _handle(request, "screen")


@post("/v1/group", summary="Segment group", **_OPTS)
async def segment_group(request: Request) -> Response:
    return await _handle(request, "group")


@post("/v1/alias", summary="Segment alias", **_OPTS)
async def segment_alias(request: Request) -> Response:
    return await _handle(request, "alias")


SEGMENT_ROUTES = [segment_batch, segment_track, segment_identify, segment_page, segment_screen, segment_group,
                  segment_alias]
