"""PostHog-compatible capture routes (CONTRACT 4.3).

``/batch/``, ``/capture/``, ``/e/``, ``/i/v0/e/`` (with or without the trailing slash)
take a batch ``{"batch": [...], "api_key", "sent_at", "historical_migration"}``, a single
event, or an array of events. The write key is a header key, ``api_key``/``token`` of the
body, or the first event's (``api_key``, ``token``, ``properties.token``). Bodies may be
gzip (``Content-Encoding: gzip``, or posthog-js's ``?compression=gzip-js``, or just the
gzip magic bytes), or posthog-js's ``data=<base64>`` form. Success is ``200 {"status": 1}`` as PostHog answers; unusable events
are listed under ``rejected`` and kept as dead letters, as on the Segment routes.

Events are mapped fully at the door (``core.posthog.map_posthog_event``) into native
queued events; ``historical_migration: true`` batches go to the import lane, a
lower-priority queue with the same dedupe marks, rate limit, trust and verification.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from urllib.parse import parse_qs

import msgspec
from litestar import MediaType, Request, Response, post

from core.event_time import oldest_event_time
from core.intake import Rejection
from core.posthog import event_write_key, map_posthog_event
from core.schemas import encode_event
from ingest_api.auth import Source, check_origin
from ingest_api.body import decode_body, decode_envelope
from ingest_api.deadletter import store_rejections
from ingest_api.enqueue import PendingEvent
from ingest_api.errors import BadRequest
from ingest_api.idempotency import idempotent
from ingest_api.pipeline import check_batch_size, new_event_id, pending_event
from ingest_api.state import IngestState, authenticate_request

_GZIP_MAGIC = b"\x1f\x8b"


class CaptureEnvelope(msgspec.Struct):
    """A batch body; a body without ``batch`` is one event."""

    batch: list[msgspec.Raw] | None = None
    api_key: str | None = None
    token: str | None = None
    sent_at: str | None = None
    sentAt: str | None = None  # noqa: N815 - older SDKs
    historical_migration: bool = False


_envelope_decoder = msgspec.json.Decoder(CaptureEnvelope)
_array_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_SUCCESS = b'{"status":1}'


def _body(request: Request, raw: bytes, max_bytes: int) -> bytes:
    """The JSON bytes of a capture body: gzip (header, ``?compression=gzip-js`` or magic
    bytes) is inflated; posthog-js's form body ``data=<base64 JSON>`` (its
    ``compression=base64`` mode) is decoded."""
    encoding = request.headers.get("content-encoding")
    compression = (request.query_params.get("compression") or "").lower()
    if not encoding and (compression == "gzip-js" or compression == "gzip" or raw[:2] == _GZIP_MAGIC):
        encoding = "gzip"
    body = decode_body(raw, encoding, max_bytes)
    if body[:5] != b"data=":
        return body
    data = parse_qs(body.decode("latin-1"), max_num_fields=4).get("data", [""])[0]
    try:
        return base64.b64decode(data + "=" * (-len(data) % 4), altchars=b"-_" if "-" in data or "_" in data else None,
                                validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("form field data must be base64 of a JSON body", code="invalid_encoding") from None


def _parse(body: bytes) -> tuple[list[msgspec.Raw], str | None, str | None, bool]:
    """(events, write key from the body, sent_at, historical_migration)."""
    if body.lstrip()[:1] == b"[":
        raws = decode_envelope(_array_decoder, body, "a JSON array of events")
        return raws, event_write_key(bytes(raws[0])) if raws else None, None, False
    env = decode_envelope(_envelope_decoder, body, '{"batch": [...]} or an event object')
    if env.batch is None:
        return [msgspec.Raw(body)], env.api_key or env.token or event_write_key(body), env.sent_at or env.sentAt, \
            env.historical_migration
    key = env.api_key or env.token or (event_write_key(bytes(env.batch[0])) if env.batch else None)
    return env.batch, key, env.sent_at or env.sentAt, env.historical_migration


async def _handle(request: Request) -> Response:
    st: IngestState = request.app.state.ingest
    settings = st.settings
    received_at = datetime.now(UTC)
    header_key = await st.header_key(request)
    body = _body(request, await request.body(), settings.max_request_bytes)
    raws, body_key, sent_at, historical = _parse(body)
    source = await authenticate_request(st, header_key, body_key)
    check_origin(source, request.headers.get("origin"))
    return await idempotent(request, source, body, settings.idempotency_ttl_s, settings.idempotency_lock_s,
                            settings.retry_after_s,
                            lambda: _process(st, request, source, raws, sent_at, historical, received_at))


async def _process(st: IngestState, request: Request, source: Source, raws: list[msgspec.Raw],
                   sent_at: str | None, historical: bool, received_at: datetime) -> Response:
    settings = st.settings
    check_batch_size(len(raws), settings.max_events_per_request, "batch")
    pending: list[PendingEvent] = []
    rejected: list[tuple[int, Rejection, bytes]] = []
    oldest = oldest_event_time(received_at, settings.retention_months)
    for i, raw in enumerate(raws):
        raw_bytes = bytes(raw)
        event_id = new_event_id()
        mapped = map_posthog_event(raw_bytes, event_id=event_id, batch_sent_at=sent_at, received_at=received_at,
                                   max_event_bytes=settings.max_event_bytes, max_future_s=settings.max_future_skew_s,
                                   phone_region=source.phone_region, oldest_event_time=oldest,
                                   extra_blocked=source.extra_blocked)
        if isinstance(mapped, Rejection):
            rejected.append((i, mapped, raw_bytes))
            continue
        event, dedupe_key = mapped
        try:
            blob = encode_event(event)
        except OverflowError:  # msgpack carries 64-bit integers at most
            rejected.append((i, Rejection("number_out_of_range", None, "an integer is beyond 64 bits; send it as a "
                                          "string"), raw_bytes))
            continue
        pending.append(pending_event(source, blob, event_id, dedupe_key))
    request_id = request.state.request_id
    queued = await st.queue(source, pending, received_at, request_id, import_lane=historical)
    n_dup = sum(1 for d in queued.duplicates_of if d is not None)
    st.metrics.count_events(len(pending) - n_dup, len(rejected), n_dup)
    if not rejected:
        return Response(content=_SUCCESS, status_code=200, media_type=MediaType.JSON)
    await store_rejections(st.redis, source.tenant_id, source.id, received_at, request_id, rejected,
                           settings.dead_letter_ttl_s)
    listed = [{"index": i, "code": r.code, "message": r.message} for i, r, _ in rejected]
    if not pending:
        body_out = {"code": "no_usable_events", "message": "every event was unusable; see rejected",
                    "status": 400, "rejected": listed}
        return Response(content=msgspec.json.encode(body_out), status_code=400, media_type=MediaType.JSON)
    return Response(content=msgspec.json.encode({"status": 1, "rejected": listed}), status_code=200,
                    media_type=MediaType.JSON)


@post(["/batch", "/batch/", "/capture", "/capture/", "/e", "/e/", "/i/v0/e", "/i/v0/e/"],
      summary="PostHog capture (batch, single event or array)", status_code=200, tags=["posthog"])
async def posthog_capture(request: Request) -> Response:
    return await _handle(request)


POSTHOG_ROUTES = [posthog_capture]
