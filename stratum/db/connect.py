"""Opening connections and creating the database. Callers pass the URL in."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from stratum.settings import libpq_url


def connect(database_url: str, connection_class: type[psycopg.Connection] = psycopg.Connection,
            **kwargs: Any) -> psycopg.Connection:
    return connection_class.connect(libpq_url(database_url), **kwargs)


def scalar(conn: psycopg.Connection, query: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Any:
    """The first column of the one row ``query`` returns (an aggregate, a function call).
    Raises LookupError when it returns no row."""
    row = conn.execute(query, params).fetchone()
    if row is None:
        raise LookupError(f"no row from {query[:80]!r}")
    return row[0]


def database_name(database_url: str) -> str:
    params = conninfo_to_dict(libpq_url(database_url))
    return str(params.get("dbname") or params.get("user") or "postgres")


def create_database_if_missing(database_url: str) -> bool:
    """Create the URL's database on its server when it does not exist. True if created."""
    name = database_name(database_url)
    admin = make_conninfo(libpq_url(database_url), dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return False
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.DuplicateDatabase:
            return False  # created concurrently by another process
        return True


def with_database(database_url: str, name: str) -> str:
    """The same server URL pointing at another database (``postgresql://...`` in, URL out)."""
    parts = urlsplit(libpq_url(database_url))
    # Built by hand: urlunsplit drops the empty host of socket URLs (postgresql:///db).
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme}://{parts.netloc}/{quote(name)}{query}"
