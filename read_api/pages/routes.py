"""Routes of the web pages: the HTML shells and their static assets.

Pages answer with a strict Content-Security-Policy (scripts, styles and API calls from
this origin only, no inline script): the pages hold API keys, and they render data written
by browsers with public write keys, so injected markup must not be able to run.
"""

from __future__ import annotations

from pathlib import Path

from litestar import MediaType, Request, Response, get
from litestar.datastructures import CacheControlHeader
from litestar.params import FromPath
from litestar.static_files import create_static_files_router

from read_api.errors import NotFound

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_PATH = "/pages/static"

PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def page_response(filename: str) -> Response:
    """The HTML shell ``static/<filename>`` with the page security headers."""
    return Response((STATIC_DIR / filename).read_bytes(), media_type=MediaType.HTML, headers=PAGE_HEADERS)


@get("/cdp-calculator", include_in_schema=False, sync_to_thread=False)
def calculator_page() -> Response:
    """The CDP ROI calculator; needs no key."""
    return page_response("calculator.html")


@get("/profiles", include_in_schema=False, sync_to_thread=False)
def profiles_page() -> Response:
    """Profile search; the page asks for a tenant key before it shows anything."""
    return page_response("profiles.html")


@get("/profiles/{profile_id:str}", include_in_schema=False, sync_to_thread=False)
def profile_page(profile_id: FromPath[str]) -> Response:
    """One profile (traits, consents, events, identity graph); the page reads the id from its
    URL and loads the data with the key."""
    return page_response("profiles.html")


@get("/segments", include_in_schema=False, sync_to_thread=False)
def segments_page() -> Response:
    """The segment builder; the page asks for a tenant key before it shows anything."""
    return page_response("segments.html")


@get("/ops", include_in_schema=False, sync_to_thread=False)
def ops_page() -> Response:
    """Queue, workers, throughput, failed jobs and dead letters; data needs an operator key."""
    return page_response("ops.html")


# The only files served: a path that is not one of them (NUL bytes, 5,000 characters,
# traversal) is a 404 before it reaches the file system, which would raise on such names.
STATIC_FILES = frozenset(p.name for p in STATIC_DIR.iterdir() if p.is_file())


def only_known_static_files(request: Request) -> None:
    name = str(request.path_params.get("file_path", "")).lstrip("/")
    if name not in STATIC_FILES:
        raise NotFound("no such page asset")


# no-cache: browsers revalidate (ETag / Last-Modified), so a deploy is seen at once.
static_assets = create_static_files_router(
    path=STATIC_PATH, directories=[STATIC_DIR], name="pages-static", include_in_schema=False,
    cache_control=CacheControlHeader(no_cache=True), before_request=only_known_static_files,
)

PAGE_ROUTES = [calculator_page, profiles_page, profile_page, segments_page, ops_page, static_assets]
