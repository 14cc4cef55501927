"""A 200 JSON response whose body the handler has already encoded (the profile lookups).

Litestar turns a returned ``Response`` into the ASGI response it sends through
``Response.to_asgi_response``: it merges the route's headers and cookies, looks up a
serializer and builds ``ASGIResponse``'s header container one ``setdefault`` at a time.
For a body that is already bytes, with nothing to merge, all of that yields the same two
headers (``content-type: application/json`` and the length), and it cost a lookup about
as much as the whole key check (docs/PERFORMANCE.md). This response
builds those two headers directly; the ASGI messages are still sent by ``ASGIResponse``
itself, and anything else (route headers or cookies, a background task, another status,
HEAD) takes Litestar's general path unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeVar

from litestar import MediaType, Response
from litestar.datastructures.headers import MutableScopeHeaders
from litestar.response.base import ASGIResponse

if TYPE_CHECKING:
    from litestar.app import Litestar
    from litestar.background_tasks import BackgroundTask, BackgroundTasks
    from litestar.connection import Request
    from litestar.datastructures.cookie import Cookie
    from litestar.types import TypeEncodersMap

T = TypeVar("T")

_JSON = MediaType.JSON.value.encode("latin-1")


class EncodedJSONBody(ASGIResponse):
    """``ASGIResponse`` for status 200 and a JSON body: the same fields and headers
    (content type, then length) as ``ASGIResponse(body=body, media_type=MediaType.JSON)``,
    set without its general-purpose header handling."""

    __slots__ = ()

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.status_code = 200
        self.content_length = len(body)
        self.encoding = "utf-8"
        self.is_head_response = False
        self.background = None
        self._encoded_cookies = ()
        self.headers = MutableScopeHeaders()
        self.headers.headers = [(b"content-type", _JSON), (b"content-length", str(len(body)).encode("latin-1"))]


class EncodedJSONResponse(Response[T]):
    """A 200 response whose ``content`` is the encoded JSON body (bytes)."""

    __slots__ = ()

    def __init__(self, body: bytes) -> None:
        # What Response.__init__(body, media_type=MediaType.JSON) sets, without its general
        # handling of headers, cookies and encoders (tests/unit/test_encoded_response.py
        # compares every slot).
        self.content = body  # type: ignore[assignment]  # T names what the body encodes
        self.background = None
        self.cookies = []
        self.encoding = "utf-8"
        self.headers = {}
        self.media_type = MediaType.JSON
        self.status_code = None
        self.response_type_encoders = {}

    def to_asgi_response(
        self,
        app: Litestar | None,
        request: Request,
        *,
        background: BackgroundTask | BackgroundTasks | None = None,
        cookies: Iterable[Cookie] | None = None,
        encoded_headers: Iterable[tuple[bytes, bytes]] | None = None,
        headers: dict[str, str] | None = None,
        is_head_response: bool = False,
        media_type: MediaType | str | None = None,
        status_code: int | None = None,
        type_encoders: TypeEncodersMap | None = None,
    ) -> ASGIResponse:
        if (app is None and not (background or cookies or encoded_headers or headers or is_head_response)
                and status_code in (None, 200) and self.status_code is None
                and not (self.background or self.cookies or self.headers)):
            return EncodedJSONBody(self.content)  # type: ignore[arg-type]  # content is the encoded body
        return super().to_asgi_response(app, request, background=background, cookies=cookies,
                                        encoded_headers=encoded_headers, headers=headers,
                                        is_head_response=is_head_response, media_type=media_type,
                                        status_code=status_code, type_encoders=type_encoders)
