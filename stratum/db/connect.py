"""Opening connections and creating the database. Callers pass the URL in."""

from __future__ import annotations

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from stratum.settings import libpq_url


def connect(database_url: str, **kwargs) -> psycopg.Connection:
    return psycopg.connect(libpq_url(database_url), **kwargs)


def database_name(database_url: str) -> str:
    params = conninfo_to_dict(libpq_url(database_url))
    return params.get("dbname") or params.get("user") or "postgres"


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
