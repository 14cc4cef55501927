"""``GET /`` of both APIs: where to go from here. Browsers get a small HTML page of links;
clients that ask for JSON (``Accept: application/json``) get ``{"name", "links": [{"href",
"title"}]}``. The page loads nothing, from this host or any other."""

from __future__ import annotations

import html

from litestar import MediaType, Request, Response, get
from litestar.handlers import HTTPRouteHandler

_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def index_route(name: str, links: list[tuple[str, str]]) -> HTTPRouteHandler:
    """A ``GET /`` handler listing ``links`` as (href, title) pairs under the heading ``name``."""
    items = "".join(f'<li><a href="{html.escape(href)}">{html.escape(title)}</a> <code>{html.escape(href)}</code></li>'
                    for href, title in links)
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(name)}</title></head>'
            f"<body><h1>{html.escape(name)}</h1><ul>{items}</ul></body></html>").encode()
    as_json = {"name": name, "links": [{"href": href, "title": title} for href, title in links]}

    @get("/", include_in_schema=False, sync_to_thread=False)
    def index(request: Request) -> Response:
        if request.accept.best_match([MediaType.HTML, MediaType.JSON], default=MediaType.HTML) == MediaType.JSON:
            return Response(as_json, media_type=MediaType.JSON, headers=_HEADERS)
        return Response(page, media_type=MediaType.HTML, headers=_HEADERS)

    return index
