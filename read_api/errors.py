"""The read API's one error hierarchy and its one mapping to HTTP (CONTRACT 4.6).

Every error body is ``{"code": "snake_case", "message": "what to change", "status": N}``,
plus ``"errors": [...]`` when there is field-level detail. The handlers below are the only
place where exceptions become HTTP responses; ``create_app`` registers them.
"""

from __future__ import annotations

import msgspec
import psycopg
import redis.exceptions
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from psycopg_pool import PoolTimeout

from core.errors import StratumError
from stratum.request_body import BodyIncomplete, BodyTimeout

# Seconds a client should wait before retrying a 409 or 503.
RETRY_AFTER_S = 5


class ApiError(Exception):
    status = 400
    code = "invalid_request"

    def __init__(self, message: str, *, code: str | None = None, errors: list[dict] | None = None,
                 headers: dict[str, str] | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.errors = errors
        self.headers = headers or {}


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message, code=code, headers={"WWW-Authenticate": 'Bearer realm="stratum"'})


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    """The object is being changed by someone else right now; retrying later will work."""

    status = 409
    code = "conflict"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message, code=code, headers={"Retry-After": str(RETRY_AFTER_S)})


class TooManyRequests(ApiError):
    status = 429
    code = "too_many_requests"

    def __init__(self, message: str, *, code: str | None = None, retry_after_s: int = RETRY_AFTER_S) -> None:
        super().__init__(message, code=code, headers={"Retry-After": str(retry_after_s)})


class Unavailable(ApiError):
    status = 503
    code = "unavailable"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message, code=code, headers={"Retry-After": str(RETRY_AFTER_S)})


def _body(code: str, message: str, status: int, errors: list[dict] | None = None) -> bytes:
    out: dict = {"code": code, "message": message, "status": status}
    if errors:
        out["errors"] = errors
    return msgspec.json.encode(out)


def api_error_response(_: Request, exc: ApiError) -> Response:
    return Response(_body(exc.code, exc.message, exc.status, exc.errors), status_code=exc.status,
                    media_type=MediaType.JSON, headers=exc.headers)


def domain_error_response(request: Request, exc: StratumError) -> Response:
    """Errors raised by shared code (``stratum.admin``, ``core``): ``not_found`` is 404, the rest 400."""
    error = NotFound(exc.message) if exc.code == "not_found" else BadRequest(exc.message, code=exc.code)
    if exc.field is not None:
        error.errors = [exc.as_dict()]
    return api_error_response(request, error)


def unavailable_response(request: Request, exc: Exception) -> Response:
    """Postgres or Redis cannot answer (down, pool exhausted, timed out): 503 with Retry-After."""
    request.logger.warning("service unavailable on %s: %s: %s", request.url.path, type(exc).__name__, exc)
    return api_error_response(request, Unavailable("a backing service is not reachable right now; retry shortly"))


# Exceptions that mean "try again later", not "your request is wrong".
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    psycopg.OperationalError,
    PoolTimeout,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


def http_exception_response(_: Request, exc: HTTPException) -> Response:
    status = exc.status_code
    if isinstance(exc, ValidationException):
        extra = exc.extra if isinstance(exc.extra, list) else None
        # "limit: Expected `int | null`, got `str`" says what to change; Litestar's detail does not.
        message = "; ".join(f"{e.get('key')}: {e.get('message')}" for e in extra if isinstance(e, dict)) \
            if extra else str(exc.detail)
        return Response(_body("invalid_parameter", message or str(exc.detail), 400, extra), status_code=400,
                        media_type=MediaType.JSON)
    code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized",
            413: "payload_too_large"}.get(status, "invalid_json" if "JSON" in str(exc.detail) else "invalid_request")
    return Response(_body(code, str(exc.detail), status), status_code=status, media_type=MediaType.JSON,
                    headers=exc.headers)


def body_timeout_response(request: Request, exc: BodyTimeout) -> Response:
    return api_error_response(request, ApiError(
        f"the request body did not arrive within {request.app.state.read.settings.http_body_timeout_s:g} s",
        code="body_timeout", status=408, headers={"Connection": "close"}))


def body_incomplete_response(request: Request, exc: BodyIncomplete) -> Response:
    return api_error_response(request, BadRequest(
        "the request body ended early or its chunked framing is malformed", code="invalid_body"))


def too_deep_response(request: Request, exc: RecursionError) -> Response:
    """JSON nested deeper than the decoder's recursion limit (e.g. 1,000 levels of ``[``):
    the request body is at fault, not the server."""
    return api_error_response(request, BadRequest("request body is nested too deeply", code="invalid_json"))


def unexpected_error_response(request: Request, exc: Exception) -> Response:
    request.logger.exception("unhandled error on %s", request.url.path)
    return Response(_body("internal_error", "unexpected server error", 500), status_code=500,
                    media_type=MediaType.JSON)
