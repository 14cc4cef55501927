"""Single statements of the read API (read_api/autocommit.py): they run on a pool of
autocommit connections, one round trip each, and the fallback for a transactional pool
hands its connection back as that pool expects it."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from psycopg import pq
from psycopg_pool import AsyncConnectionPool
from test_read_support import auth, event, ingest_and_drain, profile_by

from read_api.autocommit import fetch_all, fetch_one, statement_pool
from stratum.settings import libpq_url

# True inside a transaction block: its transaction started before the statement did.
IN_A_BLOCK = "SELECT now() < statement_timestamp()"


def test_the_statement_pool_runs_each_statement_outside_a_transaction_block(settings, db):
    async def run() -> tuple[bool, list[tuple], bool, pq.TransactionStatus]:
        pool = statement_pool(libpq_url(settings.database_url), 1, 1)
        await pool.open()
        try:
            row = await fetch_one(pool, IN_A_BLOCK, ())
            rows = await fetch_all(pool, "SELECT g FROM generate_series(1, 3) g", ())
            async with pool.connection() as conn:
                return row[0], rows, conn.autocommit, conn.info.transaction_status
        finally:
            await pool.close()

    in_block, rows, autocommit, status = asyncio.run(run())
    assert in_block is False and rows == [(1,), (2,), (3,)]
    assert autocommit is True and status == pq.TransactionStatus.IDLE


def test_a_transactional_pool_gets_its_connection_back_unchanged(settings, db):
    async def run() -> tuple[bool, bool, pq.TransactionStatus]:
        async with AsyncConnectionPool(libpq_url(settings.database_url), min_size=1, max_size=1) as pool:
            row = await fetch_one(pool, IN_A_BLOCK, ())
            async with pool.connection() as conn:
                return row[0], conn.autocommit, conn.info.transaction_status

    in_block, autocommit, status = asyncio.run(run())
    assert in_block is False  # the statement itself still ran in autocommit mode
    assert autocommit is False and status == pq.TransactionStatus.IDLE


def test_lookups_and_keys_are_served_from_the_statement_pool(ingest_client, read_client, tenant, drain):
    ingest_and_drain(ingest_client, drain, tenant.write_key, event("A", ("email", "pool@example.com")))
    st = read_client.app.state.read
    before = st.statements.get_stats().get("requests_num", 0)
    assert profile_by(read_client, tenant.api_key, "email", "pool@example.com").status_code == 200
    pid = profile_by(read_client, tenant.api_key, "email", "pool@example.com").json()["id"]
    assert read_client.get(f"/api/v1/cdp/profiles/{pid}/events", headers=auth(tenant.api_key)).status_code == 200
    assert st.statements.get_stats()["requests_num"] >= before + 3
    assert st.statements is not st.pool


def test_a_connection_reuses_one_cursor_and_recovers_from_a_failed_statement(settings, db):
    async def run() -> tuple[tuple, tuple, bool]:
        pool = statement_pool(libpq_url(settings.database_url), 1, 1)
        await pool.open()
        try:
            first = await fetch_one(pool, "SELECT %s::int + 1", (1,))
            async with pool.connection() as conn:
                cursor = conn.statement_cursor()
            with pytest.raises(psycopg.errors.DivisionByZero):
                await fetch_one(pool, "SELECT 1 / %s::int", (0,))
            again = await fetch_one(pool, "SELECT %s::int + 1", (41,))
            async with pool.connection() as conn:
                return first, again, conn.statement_cursor() is cursor
        finally:
            await pool.close()

    first, again, same_cursor = asyncio.run(run())
    assert first == (2,) and again == (42,) and same_cursor
