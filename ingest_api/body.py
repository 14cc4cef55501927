"""Reading a request body: gzip-aware, with every limit applied to decompressed bytes."""

from __future__ import annotations

import zlib
from typing import Any

import msgspec

from ingest_api.errors import BadRequest, PayloadTooLarge


def decode_body(raw: bytes, content_encoding: str | None, max_bytes: int) -> bytes:
    """Return the decompressed body; PayloadTooLarge past ``max_bytes`` (decompression stops
    at the limit, so a gzip bomb costs at most ``max_bytes`` of memory)."""
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        if len(raw) > max_bytes:
            raise PayloadTooLarge(f"request body is over {max_bytes} bytes")
        return raw
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise BadRequest(f"Content-Encoding {encoding!r} is not supported; use gzip", code="unsupported_encoding")
    wbits = 16 + zlib.MAX_WBITS if encoding != "deflate" else zlib.MAX_WBITS
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(raw, max_bytes + 1)
    except zlib.error as exc:
        raise BadRequest(f"body is not valid {encoding}: {exc}", code="invalid_encoding") from None
    if len(out) > max_bytes:
        raise PayloadTooLarge(f"decompressed request body is over {max_bytes} bytes")
    if not d.eof:
        raise BadRequest(f"body is a truncated {encoding} stream", code="invalid_encoding")
    return out


def decode_envelope(decoder: msgspec.json.Decoder, body: bytes, shape: str) -> Any:
    """Decode a request body with ``decoder``; 400 ``invalid_envelope`` when it is JSON of
    the wrong shape (``shape`` says what is expected), 400 ``invalid_json`` otherwise."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"body must be {shape}: {exc}", code="invalid_envelope") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:
        raise BadRequest("body is nested too deeply", code="invalid_json") from None
