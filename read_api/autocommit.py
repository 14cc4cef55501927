"""Single statements outside a transaction block, for the hot read paths.

psycopg opens a transaction block before the first statement on a connection that is not in
autocommit mode, so a plain SELECT would cost three round trips (BEGIN, the query, COMMIT at
the pool's return). A statement in autocommit mode costs one and still sees one snapshot, which
is all the read paths' no-stale-answer guarantee rests on (one statement, one snapshot). The
connection goes back to the pool with autocommit off, as every other user expects it.
"""

from __future__ import annotations

from typing import Any

from psycopg_pool import AsyncConnectionPool


async def fetch_one(pool: AsyncConnectionPool, sql: str, params: Any) -> tuple[Any, ...] | None:
    """The first row of one statement run in autocommit mode (None if it returned none)."""
    async with pool.connection() as conn:
        await conn.set_autocommit(True)
        try:
            return await (await conn.execute(sql, params)).fetchone()
        finally:
            await conn.set_autocommit(False)


async def fetch_all(pool: AsyncConnectionPool, sql: str, params: Any) -> list[tuple[Any, ...]]:
    """Every row of one statement run in autocommit mode."""
    async with pool.connection() as conn:
        await conn.set_autocommit(True)
        try:
            return await (await conn.execute(sql, params)).fetchall()
        finally:
            await conn.set_autocommit(False)
