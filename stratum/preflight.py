"""Checks the ``stratum`` command runs before its work, so a wrong configuration ends in
one clear line and a non-zero exit within seconds instead of a traceback or a hang.

- URL syntax (every command but ``dev``): a malformed ``STRATUM_DATABASE_URL`` or
  ``STRATUM_REDIS_URL`` is named with what is expected; passwords are never echoed.
- Connections (short-lived commands): one connection to each service the command needs,
  with a connect timeout of ``CONNECT_TIMEOUT_S``, which also covers a URL pointing at
  the wrong kind of server (one that never answers the protocol) and a refused role.

Raises ``ServiceError`` carrying the line to print and the exit code.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

# libpq counts its connect_timeout in whole seconds, and at least 2.
CONNECT_TIMEOUT_S = 5

# Which services each command uses; ``dev`` picks (or starts) its own, so it is absent.
_NEEDS = {
    "migrate": ("postgres",), "tenant": ("postgres",), "operator": ("postgres",),
    "source": ("postgres",), "export": ("postgres",),
    "status": ("redis",), "replay-failed": ("redis",),
    "worker": ("postgres", "redis"), "scheduler": ("postgres", "redis"),
    "ingest-api": ("postgres", "redis"), "read-api": ("postgres", "redis"),
}


class ServiceError(Exception):
    """A configuration or service problem, as one line for the user."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def redacted(url: str) -> str:
    """The URL with any password replaced by ``***``."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "(unparseable URL)"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def check_postgres_url(url: str) -> dict:
    """Parsed libpq parameters of a ``postgresql://`` URL; ``ServiceError`` (exit 2) if malformed."""
    from psycopg.conninfo import conninfo_to_dict

    expected = "expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE (or postgresql:///DATABASE for the local socket)"
    scheme = url.partition("://")[0] if "://" in url else ""
    if not scheme.startswith("postgres"):
        raise ServiceError(f"STRATUM_DATABASE_URL {redacted(url)!r} is not a PostgreSQL URL: {expected}", 2)
    from stratum.settings import libpq_url

    try:
        params = conninfo_to_dict(libpq_url(url))
    except Exception as exc:  # noqa: BLE001 - psycopg raises several kinds for a bad URI
        raise ServiceError(f"STRATUM_DATABASE_URL {redacted(url)!r} is malformed ({_one_line(exc)}): {expected}",
                           2) from None
    port = params.get("port")
    if port is not None and not all(p.isdigit() for p in str(port).split(",")):
        raise ServiceError(f"STRATUM_DATABASE_URL {redacted(url)!r} has a port that is not a number: {expected}", 2)
    return params


def check_redis_url(url: str) -> None:
    """``ServiceError`` (exit 2) if ``url`` is not a Redis URL redis-py can use."""
    from redis.connection import parse_url

    expected = "expected redis://[:PASSWORD@]HOST:PORT/DB, rediss://... or unix:///path/to/socket"
    try:
        parse_url(url)
    except ValueError as exc:
        raise ServiceError(f"STRATUM_REDIS_URL {redacted(url)!r} is malformed ({_one_line(exc)}): {expected}",
                           2) from None


def _postgres_where(params: dict) -> str:
    host = params.get("host") or "the local socket"
    where = f"{host}:{params['port']}" if params.get("port") else host
    return f"PostgreSQL at {where}, database {params.get('dbname') or params.get('user') or '(default)'}"


def connect_postgres(url: str, params: dict, *, dbname: str | None = None) -> None:
    """Open and close one connection; ``ServiceError`` (exit 3) saying why it failed."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    from stratum.settings import libpq_url

    conninfo = make_conninfo(libpq_url(url), connect_timeout=CONNECT_TIMEOUT_S,
                             **({"dbname": dbname} if dbname else {}))
    try:
        with psycopg.connect(conninfo) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        detail = _one_line(exc)
        # libpq prefixes "connection failed: connection to server at ... failed:"; keep the reason
        reason = detail.rsplit("failed: ", 1)[-1] if "failed: " in detail else detail
        if "timeout expired" in detail:
            reason = (f"no PostgreSQL answered within {CONNECT_TIMEOUT_S} s; is STRATUM_DATABASE_URL "
                      "the right host and port (not another service's)?")
        if "database" in reason and "does not exist" in reason:
            reason += "; run stratum migrate to create it"
        raise ServiceError(f"cannot use {_postgres_where(params)} (STRATUM_DATABASE_URL): {reason}", 3) from None


def connect_redis(url: str) -> None:
    """PING once; ``ServiceError`` (exit 3) saying why it failed."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=CONNECT_TIMEOUT_S)
        try:
            client.ping()
        finally:
            client.close()
    except redis.exceptions.TimeoutError:
        raise ServiceError(f"no Redis answered at {redacted(url)} within {CONNECT_TIMEOUT_S} s (STRATUM_REDIS_URL); "
                           "is it the right host and port (not another service's)?", 3) from None
    except (redis.exceptions.RedisError, OSError) as exc:
        hint = ""
        if isinstance(exc, redis.exceptions.ConnectionError) and "closed by server" in str(exc):
            hint = "; is that port a Redis server (not another service)?"
        raise ServiceError(f"cannot use Redis at {redacted(url)} (STRATUM_REDIS_URL): {_one_line(exc).rstrip('.')}{hint}",
                           3) from None


def check_services(settings, command: str, *, connect: bool) -> None:
    """Check the URLs ``command`` uses, and with ``connect`` reach each service once.
    ``migrate`` may be about to create its database, so it connects to ``postgres``."""
    needs = _NEEDS.get(command, ())
    params = check_postgres_url(settings.database_url) if "postgres" in needs else None
    if "redis" in needs:
        check_redis_url(settings.redis_url)
    if not connect:
        return
    if params is not None:
        connect_postgres(settings.database_url, params, dbname="postgres" if command == "migrate" else None)
    if "redis" in needs:
        connect_redis(settings.redis_url)
