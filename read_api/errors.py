"""The read API's one error hierarchy and its one mapping to HTTP (CONTRACT 4.6)."""

from __future__ import annotations

import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException


class ApiError(Exception):
    status = 400
    code = "invalid_request"

    def __init__(self, message: str, *, code: str | None = None, errors: list[dict] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.errors = errors
        self.headers = headers or {}


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class Unavailable(ApiError):
    status = 503
    code = "unavailable"


def _body(code: str, message: str, status: int, errors: list[dict] | None = None) -> bytes:
    out: dict = {"code": code, "message": message, "status": status}
    if errors:
        out["errors"] = errors
    return msgspec.json.encode(out)


def api_error_response(_: Request, exc: ApiError) -> Response:
    return Response(_body(exc.code, exc.message, exc.status, exc.errors), status_code=exc.status,
                    media_type=MediaType.JSON, headers=exc.headers)


def http_exception_response(_: Request, exc: HTTPException) -> Response:
    status = exc.status_code
    if isinstance(exc, ValidationException):
        extra = exc.extra if isinstance(exc.extra, list) else None
        return Response(_body("invalid_parameter", str(exc.detail), 400, extra), status_code=400,
                        media_type=MediaType.JSON)
    code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}.get(status, "invalid_request")
    return Response(_body(code, str(exc.detail), status), status_code=status, media_type=MediaType.JSON,
                    headers=exc.headers)


def unexpected_error_response(request: Request, exc: Exception) -> Response:
    request.logger.exception("unhandled error on %s", request.url.path)
    return Response(_body("internal_error", "unexpected server error", 500), status_code=500,
                    media_type=MediaType.JSON)
