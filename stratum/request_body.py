"""Reading request bodies from clients that may be slow or broken on purpose (both APIs).

The HTTP server (granian) bounds how long a client may take to send its headers
(``STRATUM_HTTP_HEADER_TIMEOUT_S``), but not its body, and it reports a body with broken
chunked framing (a bad chunk size, a missing CRLF) or a connection closed mid-body as an
``http.disconnect`` message, which frameworks turn into a 500. This ASGI middleware wraps
``receive`` so that, until the body is complete:

- the whole body must arrive within ``timeout_s`` of the request's start, else
  ``BodyTimeout`` is raised (the APIs answer 408): a client trickling one byte every few
  seconds cannot hold a connection and a worker slot for ever;
- a disconnect before the last body chunk raises ``BodyIncomplete`` (the APIs answer 400).

Once the body is complete, ``receive`` is passed through untouched: streamed responses
listen on it for the client going away.
"""

from __future__ import annotations

import asyncio
import time


class BodyTimeout(Exception):
    """The request body did not arrive in time."""


class BodyIncomplete(Exception):
    """The connection ended, or the chunked framing broke, before the body was complete."""


def guard_request_body(app, timeout_s: float):
    """Wrap the ASGI ``app`` so its HTTP requests read their bodies under the rules above."""

    async def middleware(scope, receive, send):
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        deadline = time.monotonic() + timeout_s
        body_done = False

        async def guarded_receive():
            nonlocal body_done
            if body_done:
                return await receive()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BodyTimeout
            try:
                # asyncio.timeout, not wait_for: no task per body chunk (a request's hot path)
                async with asyncio.timeout(remaining):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout from None
            if message["type"] == "http.disconnect":
                raise BodyIncomplete
            if not message.get("more_body", False):
                body_done = True
            return message

        await app(scope, guarded_receive, send)

    return middleware
