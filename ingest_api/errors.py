"""The ingest API's one error hierarchy and its one mapping to HTTP.

Every error body is ``{"code", "message", "status"}``: the native contract (CONTRACT 4.6),
and also what Segment/RudderStack SDKs parse (they read ``code`` and ``message`` and
ignore the rest; JSON without both makes them crash-retry).
"""

from __future__ import annotations

import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException

from stratum.request_body import BodyIncomplete, BodyTimeout


class IngestError(Exception):
    status = 400
    code = "invalid_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 headers: dict[str, str] | None = None, errors: list[dict] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}
        self.errors = errors


class BadRequest(IngestError):
    status = 400


class Unauthorized(IngestError):
    status = 401
    code = "invalid_write_key"


class Forbidden(IngestError):
    status = 403
    code = "source_disabled"


class PayloadTooLarge(IngestError):
    status = 413
    code = "payload_too_large"


class Unavailable(IngestError):
    """Nothing was queued; the client should retry after ``Retry-After`` seconds."""

    status = 503
    code = "unavailable"

    def __init__(self, message: str, *, retry_after_s: int, code: str | None = None) -> None:
        super().__init__(message, code=code, headers={"Retry-After": str(retry_after_s)})


class RateLimited(IngestError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


def error_body(code: str, message: str, status: int, errors: list[dict] | None = None) -> bytes:
    body: dict = {"code": code, "message": message, "status": status}
    if errors:
        body["errors"] = errors
    return msgspec.json.encode(body)


def ingest_error_response(_: Request, exc: IngestError) -> Response:
    return Response(
        content=error_body(exc.code, exc.message, exc.status, exc.errors),
        status_code=exc.status,
        media_type=MediaType.JSON,
        headers=exc.headers,
    )


_HTTP_CODES = {
    404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type",
}


def http_exception_response(_: Request, exc: HTTPException) -> Response:
    """Framework errors (unknown route, wrong method, body over the server limit) in our shape."""
    status = exc.status_code
    code = _HTTP_CODES.get(status, "invalid_request" if status < 500 else "internal_error")
    return Response(
        content=error_body(code, str(exc.detail), status),
        status_code=status,
        media_type=MediaType.JSON,
        headers=exc.headers,
    )


def body_timeout_response(request: Request, exc: BodyTimeout) -> Response:
    seconds = request.app.state.ingest.settings.http_body_timeout_s
    return ingest_error_response(request, IngestError(
        f"the request body did not arrive within {seconds:g} s", code="body_timeout", status=408,
        headers={"Connection": "close"}))


def body_incomplete_response(request: Request, exc: BodyIncomplete) -> Response:
    return ingest_error_response(request, BadRequest(
        "the request body ended early or its chunked framing is malformed", code="invalid_body"))


def unexpected_error_response(request: Request, exc: Exception) -> Response:
    request.logger.exception("unhandled error on %s", request.url.path)
    return Response(
        content=error_body("internal_error", "unexpected server error; retry later (dedupe keys make retries safe)", 500),
        status_code=500,
        media_type=MediaType.JSON,
    )
