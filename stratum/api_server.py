"""Serving an API under granian, on a port no other server can share.

On Linux granian gives each of its workers its own listening socket with ``SO_REUSEPORT``,
so a second server started on a port that is already served binds as well, and the kernel
then splits the connections between the two: requests silently reach the wrong process.
Here the serving process binds the port once, without ``SO_REUSEPORT``, and granian's
workers inherit that one socket (``ExclusivePortServer``). A port that something already
listens on then fails to bind, whatever the other listener is, and a later server cannot
join ours; ``PortInUse`` names the port, and the ``stratum`` command prints it as one line
and exits 2 (docs/OPERATIONS.md).
"""

from __future__ import annotations

import errno
import socket
import sys

from granian import Granian
from granian._granian import SocketHolder

from stratum.preflight import ServiceError
from stratum.settings import Settings


class PortInUse(ServiceError):
    """Another process listens on the port (or the address cannot be bound): a configuration
    problem, exit 2."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(f"cannot serve on {host}:{port}: {reason}; stop it or choose another port "
                         "(--port, STRATUM_INGEST_PORT / STRATUM_READ_PORT)", 2)
        self.host, self.port, self.reason = host, port, reason


def bind_exclusively(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` without ``SO_REUSEPORT``, not yet listening.

    ``SO_REUSEADDR`` only lets a restarted server take over connections of a previous one
    that are still closing (TIME_WAIT); it never allows two listeners on one port. Raises
    ``PortInUse`` when the port is taken (or the address cannot be bound: the reason says).
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise PortInUse(host, port, f"cannot resolve {host!r}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        reason = "another process listens there" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise PortInUse(host, port, reason) from None
    return sock


def check_port_free(host: str, port: int) -> None:
    """Raise ``PortInUse`` when ``host:port`` cannot be bound right now (a plain bind, then
    closed: a check before starting servers, not a reservation)."""
    bind_exclusively(host, port).close()


class ExclusivePortServer(Granian):
    """granian, serving its workers from one socket bound by ``bind_exclusively``."""

    def _init_shared_socket(self) -> None:
        # Replaces granian's own binding (a spec each worker binds with SO_REUSEPORT on Linux).
        # Workers get (None, holder): granian's path for a socket shared by file descriptor,
        # inherited by the forked worker processes.
        if self.bind_uds:
            return super()._init_shared_socket()
        sock = bind_exclusively(self.bind_addr, self.bind_port)
        sock.listen(self.backlog)
        sock.set_inheritable(True)
        self._ssp = None
        self._shd = SocketHolder(sock.fileno(), False, self.backlog)
        self._sfd = sock.fileno()
        self._sso = sock


def serve_api(target: str, host: str, port: int, workers: int, settings: Settings) -> None:
    """Serve an API under granian, hardened against clients that hold connections open:
    headers must arrive within ``http_header_timeout_s`` (bodies are bounded by the apps,
    stratum.request_body), and each worker serves up to ``http_max_connections`` connections
    at once, so a thousand idle or trickling clients do not lock everyone else out; beyond
    the cap, new connections wait in the listen backlog until a slot frees. A front proxy
    should still shield production (docs/OPERATIONS.md). Raises ``PortInUse`` before
    starting anything when the port is taken."""
    import shutil

    from granian.constants import Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels

    from stratum.prometheus import share_metrics_between_processes

    check_port_free(host, port)
    _raise_open_files_limit(settings.http_max_connections * max(workers, 1) + 256)
    header_timeout_ms = min(max(int(settings.http_header_timeout_s * 1000), 1), 60_000)  # granian's range
    metrics_dir = share_metrics_between_processes(workers)
    try:
        ExclusivePortServer(target, address=host, port=port, workers=workers, interface=Interfaces.ASGI,
                            factory=True, log_access=False, log_level=LogLevels(settings.log_level.lower()),
                            backpressure=settings.http_max_connections,
                            http1_settings=HTTP1Settings(header_read_timeout=header_timeout_ms)).serve()
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _raise_open_files_limit(wanted: int) -> None:
    """Each connection holds a file descriptor: raise the soft limit towards ``wanted``
    (up to the hard limit), so the connection cap, not the descriptor limit, decides."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if hard != resource.RLIM_INFINITY and hard < wanted:
        print(f"warning: the open-files limit ({hard}) is below what STRATUM_HTTP_MAX_CONNECTIONS needs ({wanted}); "
              "raise it (ulimit -n, LimitNOFILE=) or lower the cap", file=sys.stderr)
