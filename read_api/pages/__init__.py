"""The read API's web pages: /cdp-calculator, /profiles and /ops.

Plain HTML shells with vanilla JavaScript modules and inline SVG, served from
``static/`` by this process (no build step, no CDN, works offline). The shells are public;
every piece of tenant or operator data comes from the key-protected JSON APIs, called by
the page with the key the user typed (kept in sessionStorage).
"""

from read_api.pages.routes import PAGE_ROUTES, STATIC_DIR

__all__ = ["PAGE_ROUTES", "STATIC_DIR"]
