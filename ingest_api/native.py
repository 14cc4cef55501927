"""``POST /api/v1/cdp/events``: the native batch endpoint (CONTRACT 4.1)."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
from litestar import MediaType, Request, Response, post

from core.emq import emq_summary
from core.event_time import oldest_event_time
from core.intake import Accepted, Rejection, intake_native_event
from ingest_api.auth import Source, check_origin
from ingest_api.body import decode_body, decode_envelope
from ingest_api.idempotency import idempotent
from ingest_api.pipeline import check_batch_size, new_event_id, pending_of
from ingest_api.state import IngestState, authenticate_request


class NativeEnvelope(msgspec.Struct):
    events: list[msgspec.Raw]
    writeKey: str | None = None  # noqa: N815 (wire name)
    api_key: str | None = None


_envelope_decoder = msgspec.json.Decoder(NativeEnvelope)


@post("/api/v1/cdp/events", status_code=202, summary="Ingest a batch of native events")
async def post_events(request: Request) -> Response:
    st: IngestState = request.app.state.ingest
    settings = st.settings
    received_at = datetime.now(UTC)
    header_key = await st.header_key(request)
    body = decode_body(await request.body(), request.headers.get("content-encoding"), settings.max_request_bytes)
    envelope = decode_envelope(_envelope_decoder, body, '{"events": [...]}')
    source = await authenticate_request(st, header_key, envelope.writeKey or envelope.api_key)
    check_origin(source, request.headers.get("origin"))
    return await idempotent(request, source, body, settings.idempotency_ttl_s, settings.idempotency_lock_s,
                            settings.retry_after_s,
                            lambda: _process(st, request, source, envelope, received_at))


async def _process(st: IngestState, request: Request, source: Source, envelope: NativeEnvelope,
                   received_at: datetime) -> Response:
    settings = st.settings
    n = len(envelope.events)
    check_batch_size(n, settings.max_events_per_request, "events")

    outcomes: list[Accepted | Rejection] = []
    oldest = oldest_event_time(received_at, settings.retention_months)
    for raw in envelope.events:
        outcomes.append(intake_native_event(
            bytes(raw), event_id=new_event_id(), received_at=received_at, phone_region=source.phone_region,
            max_event_bytes=settings.max_event_bytes, max_future_s=settings.max_future_skew_s,
            oldest_event_time=oldest, extra_blocked=source.extra_blocked,
        ))
    accepted = [o for o in outcomes if isinstance(o, Accepted)]
    queued = await st.queue(source, [pending_of(a, source) for a in accepted], received_at, request.state.request_id)

    results: list[dict] = []
    scores: list[int] = []
    n_acc = n_dup = 0
    dup_iter = iter(queued.duplicates_of)
    for i, o in enumerate(outcomes):
        if isinstance(o, Rejection):
            results.append({"index": i, "status": "rejected", "error": o.as_dict()})
            continue
        original = next(dup_iter)
        if original is not None:
            n_dup += 1
            results.append({"index": i, "status": "duplicate", "event_id": original})
        else:
            n_acc += 1
            scores.append(o.event.emq)
            results.append({"index": i, "status": "accepted", "event_id": o.event.event_id,
                            "emq": o.event.emq, "warnings": o.warnings})
    n_rej = n - len(accepted)
    st.metrics.count_events(n_acc, n_rej, n_dup)
    body_out: dict = {"accepted": n_acc, "rejected": n_rej, "duplicates": n_dup, "emq": emq_summary(scores),
                "results": results}
    status = 202
    if n_rej == n:
        status = 400
        body_out = {"code": "all_events_rejected", "message": "every event was rejected; see results",
                    "status": 400, **body_out}
    return Response(content=msgspec.json.encode(body_out), status_code=status, media_type=MediaType.JSON)
