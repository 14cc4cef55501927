"""Alembic environment: the URL comes from stratum settings; monthly event partitions,
which the scheduler and workers create at run time, are invisible to autogenerate/check."""

from __future__ import annotations

import re

from alembic import context
from sqlalchemy import create_engine, pool

from stratum.db.models import metadata
from stratum.settings import get_settings, sqlalchemy_url

config = context.config
_PARTITION = re.compile(r"^events_(p\d{6}|default)")


def include_object(obj, name, type_, reflected, compare_to):
    if type_ == "table" and reflected and compare_to is None and _PARTITION.match(name or ""):
        return False
    return not (type_ == "index" and _PARTITION.match(getattr(getattr(obj, "table", None), "name", "") or ""))


def _url() -> str:
    return config.attributes.get("database_url") or sqlalchemy_url(get_settings().database_url)


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True, include_object=include_object)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        # Production safety: never queue behind a long lock, never run away.
        connection.exec_driver_sql("SET lock_timeout = '10s'")
        connection.exec_driver_sql("SET statement_timeout = '15min'")
        connection.commit()
        context.configure(connection=connection, target_metadata=metadata, include_object=include_object)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
