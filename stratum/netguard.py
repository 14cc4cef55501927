"""The SSRF guard's name resolution, shared by the read API (on create and on every url
change) and the delivery process (at every attempt).

A name is resolved once per check; every address it resolves to must be allowed
(``core.webhooks.address_allowed``), and the caller connects to the returned address, not
to the name again, so a second lookup cannot swap in an internal address (DNS rebinding).
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from core.errors import StratumError
from core.webhooks import address_allowed


class DestinationNotAllowed(StratumError):
    """The destination's host resolves to an address that is not allowed (loopback, private...)."""

    code = "destination_not_allowed"


def url_port(url: str) -> tuple[str, int]:
    """(host, port) of an http(s) URL."""
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def resolve_checked(host: str, port: int, allow_private: bool) -> str:
    """Resolve ``host`` once and return the address to connect to.

    Raises DestinationNotAllowed when the name does not resolve or any of its addresses is
    not allowed (all must be: a name that also points inside is refused)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        raise DestinationNotAllowed(f"the destination host {host!r} does not resolve") from None
    addresses = [info[4][0] for info in infos]
    if not addresses or not all(address_allowed(a, allow_private) for a in addresses):
        raise DestinationNotAllowed("the destination resolves to a loopback, link-local or private address; "
                                    "use a public address (or set STRATUM_DESTINATIONS_ALLOW_PRIVATE=true)")
    return addresses[0]
