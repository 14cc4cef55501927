"""The ``/schema`` pages of both APIs: Swagger UI served by the process itself.

Litestar's Swagger plugin loads its scripts and styles from a CDN: on a machine without
internet the page is blank, and it puts a third-party script on the same origin as pages
that hold API keys. Here the Swagger UI assets come from the ``swagger-ui-bundle-v2``
wheel and are served under ``/schema/assets/``; the page has no inline script (its set-up
is ``swagger-init.js``) and every ``/schema`` answer carries a Content-Security-Policy that
allows this origin only. Inline styles stay allowed: Swagger UI sets ``style`` attributes
as it renders.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from litestar import Request, Response, Router, get
from litestar.datastructures import CacheControlHeader, ResponseHeader
from litestar.exceptions import NotFoundException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.params import FromPath
from litestar.response import File
from swagger_ui_bundle import swagger_ui_path

SCHEMA_PATH = "/schema"
ASSETS_PATH = f"{SCHEMA_PATH}/assets"
SWAGGER_DIR = Path(swagger_ui_path)

DOCS_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)

# The only files served from the bundle, with their media types.
_BUNDLE_FILES = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}

# validatorUrl null: Swagger UI would otherwise send the document to validator.swagger.io.
_INIT_JS = f"""\
window.addEventListener("DOMContentLoaded", function () {{
  window.ui = SwaggerUIBundle({{
    url: "{SCHEMA_PATH}/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  }});
}});
""".encode()


class LocalSwaggerRenderPlugin(SwaggerRenderPlugin):
    """Swagger UI whose page loads only this process's ``/schema/assets/*``."""

    def __init__(self) -> None:
        super().__init__(js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js", css_url=f"{ASSETS_PATH}/swagger-ui.css",
                         standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
                         favicon=f"<link rel='icon' type='image/png' href='{ASSETS_PATH}/favicon-32x32.png'>")

    def receive_router(self, router: Router) -> None:
        """No OAuth2 redirect page: the APIs use bearer keys, and that page is an inline script."""

    def render(self, request: Request, openapi_schema: dict[str, Any]) -> bytes:
        title = html.escape(str(openapi_schema["info"]["title"]))
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
{self.favicon}
<link rel="stylesheet" href="{self.css_url}">
<script src="{self.js_url}"></script>
<script src="{ASSETS_PATH}/swagger-init.js"></script>
</head>
<body style="margin: 0">
<div id="swagger-ui"></div>
</body>
</html>
""".encode()


@get("/assets/{name:str}", include_in_schema=False, sync_to_thread=False,
     cache_control=CacheControlHeader(max_age=3600, public=True))
def swagger_asset(name: FromPath[str]) -> Response | File:
    """One Swagger UI asset; any other name is 404."""
    if name == "swagger-init.js":
        return Response(_INIT_JS, media_type="text/javascript")
    if name not in _BUNDLE_FILES:
        raise NotFoundException(f"no asset {name[:100]!r}")
    return File(SWAGGER_DIR / name, media_type=_BUNDLE_FILES[name], content_disposition_type="inline")


def openapi_config(title: str) -> OpenAPIConfig:
    """The OpenAPI set-up of an API: document at ``/schema/openapi.json``, Swagger UI at
    ``/schema`` with local assets and a strict Content-Security-Policy on every answer."""
    router = Router(SCHEMA_PATH, route_handlers=[swagger_asset], include_in_schema=False,
                    response_headers=[ResponseHeader(name="Content-Security-Policy", value=DOCS_CSP),
                                      ResponseHeader(name="X-Content-Type-Options", value="nosniff"),
                                      ResponseHeader(name="Referrer-Policy", value="no-referrer")])
    return OpenAPIConfig(title=title, version="1", path=SCHEMA_PATH, render_plugins=[LocalSwaggerRenderPlugin()],
                         openapi_router=router)
