"""Single statements outside a transaction block, for the hot read paths.

psycopg opens a transaction block before the first statement on a connection that is not in
autocommit mode, so a plain SELECT would cost three round trips (BEGIN, the query, COMMIT at
the pool's return). A statement in autocommit mode costs one and still sees one snapshot, which
is all the read paths' no-stale-answer guarantee rests on (one statement, one snapshot).

The read API keeps these statements on a pool of their own whose connections are opened in
autocommit mode (``statement_pool``), so a statement needs no switching of the connection's
mode on the way in and out (two lock-and-wait calls into psycopg each), and the pool of
transactions keeps the mode every other user expects. ``fetch_one`` and ``fetch_all`` still
accept a connection that is not in autocommit mode: they switch it for the statement and back.

Each connection of that pool also keeps one cursor for ``fetch_one``'s statements
(``StatementConnection``). A new cursor per statement builds its adaptation context again
(the dumpers of the parameters, the loaders of the result); psycopg keeps that context on a
cursor that runs the same query object again, and the lookups run module-level constants.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from psycopg import AsyncConnection, AsyncCursor
from psycopg_pool import AsyncConnectionPool


class StatementConnection(AsyncConnection[tuple[Any, ...]]):
    """A connection of the statement pool, with the cursor its statements reuse. A
    connection serves one statement at a time (it is checked out of the pool for it), so
    one cursor per connection is never shared by two statements in flight."""

    _statement_cursor: AsyncCursor[tuple[Any, ...]] | None = None

    def statement_cursor(self) -> AsyncCursor[tuple[Any, ...]]:
        cur = self._statement_cursor
        if cur is None or cur.closed:
            cur = self._statement_cursor = self.cursor()
        return cur


def statement_pool(conninfo: str, min_size: int, max_size: int,
                   configure: Callable[[AsyncConnection], Awaitable[None]] | None = None) -> AsyncConnectionPool:
    """A closed pool of UTC sessions in autocommit mode, for ``fetch_one`` / ``fetch_all``
    (open it with ``await pool.open()``). Nothing that needs a transaction belongs on it."""
    return AsyncConnectionPool(conninfo, connection_class=StatementConnection, min_size=min_size, max_size=max_size,
                               open=False, kwargs={"options": "-c TimeZone=UTC", "autocommit": True},
                               configure=configure)


async def fetch_one(pool: AsyncConnectionPool, sql: str, params: Any) -> tuple[Any, ...] | None:
    """The first row of one statement run in autocommit mode (None if it returned none)."""
    # getconn/putconn rather than pool.connection(): its context manager would also enter the
    # connection's, whose exit commits (a lock and a wait in psycopg even with nothing to
    # commit). putconn still rolls back or discards a connection a failure left unusable.
    conn = await pool.getconn()
    try:
        if not conn.autocommit:
            return await _switched(conn, sql, params, one=True)
        # The connection's reused cursor keeps this one-row result until its next statement.
        cur = conn.statement_cursor() if isinstance(conn, StatementConnection) else conn.cursor()
        await cur.execute(sql, params)
        return await cur.fetchone()
    finally:
        await pool.putconn(conn)


async def fetch_all(pool: AsyncConnectionPool, sql: str, params: Any) -> list[tuple[Any, ...]]:
    """Every row of one statement run in autocommit mode."""
    conn = await pool.getconn()
    try:
        if not conn.autocommit:
            return await _switched(conn, sql, params, one=False)
        # A new cursor: a reused one would keep this result (a timeline page can be
        # megabytes) alive on an idle connection until its next statement.
        return await (await conn.execute(sql, params)).fetchall()
    finally:
        await pool.putconn(conn)


async def _switched(conn: AsyncConnection, sql: str, params: Any, *, one: bool) -> Any:
    """The statement on a connection of a transactional pool, in autocommit mode for the
    statement only: the connection goes back with autocommit off, as its pool expects."""
    await conn.set_autocommit(True)
    try:
        cur = await conn.execute(sql, params)
        return await (cur.fetchone() if one else cur.fetchall())
    finally:
        await conn.set_autocommit(False)
