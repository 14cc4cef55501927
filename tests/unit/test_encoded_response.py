"""The profile lookups' response (read_api/encoded_response.py) sends exactly what
Litestar's general path sends for the same body, and takes that path for anything else."""

from __future__ import annotations

import asyncio

import pytest
from litestar import MediaType
from litestar.exceptions import ImproperlyConfiguredException
from litestar.response.base import ASGIResponse

from read_api.encoded_response import EncodedJSONBody, EncodedJSONResponse

BODY = b'{"id":"p1","traits":{"name":"\xc3\xa9"}}'


def _messages(response: ASGIResponse) -> list[dict]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(response({"type": "http"}, receive, send))  # type: ignore[arg-type]
    return sent


def test_the_encoded_body_sends_the_messages_of_litestars_json_response():
    general = ASGIResponse(body=BODY, media_type=MediaType.JSON)
    assert _messages(EncodedJSONBody(BODY)) == _messages(general)
    assert EncodedJSONBody(BODY).encode_headers() == [(b"content-type", b"application/json"),
                                                      (b"content-length", str(len(BODY)).encode())]


def test_the_response_holds_what_litestars_json_response_holds():
    from litestar import Response

    general = Response(BODY, media_type=MediaType.JSON)
    slots = [slot for cls in type(general).__mro__ for slot in getattr(cls, "__slots__", ())]
    assert slots and {s: getattr(EncodedJSONResponse(BODY), s) for s in slots} == {s: getattr(general, s) for s in slots}


def test_a_plain_200_takes_the_short_path():
    asgi = EncodedJSONResponse(BODY).to_asgi_response(None, None, cookies=[], headers={},  # type: ignore[arg-type]
                                                      media_type="application/json", status_code=200)
    assert type(asgi) is EncodedJSONBody


def test_anything_to_merge_takes_litestars_path():
    from litestar.datastructures import Cookie

    with_header = EncodedJSONResponse(BODY).to_asgi_response(None, None, headers={"x-route": "1"})  # type: ignore[arg-type]
    assert type(with_header) is ASGIResponse and (b"x-route", b"1") in with_header.encode_headers()
    with_cookie = EncodedJSONResponse(BODY).to_asgi_response(None, None, cookies=[Cookie("c", "v")])  # type: ignore[arg-type]
    assert type(with_cookie) is ASGIResponse and any(k == b"set-cookie" for k, _ in with_cookie.encode_headers())
    created = EncodedJSONResponse(BODY).to_asgi_response(None, None, status_code=201)  # type: ignore[arg-type]
    assert type(created) is ASGIResponse and created.status_code == 201
    with pytest.raises(ImproperlyConfiguredException):  # Litestar's own rule for HEAD with a body
        EncodedJSONResponse(BODY).to_asgi_response(None, None, is_head_response=True)  # type: ignore[arg-type]
