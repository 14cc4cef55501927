"""The lookup path taken apart: CPU microseconds per lookup of each part, measured in one
process against the bench database (``python -m bench.read`` calls ``measure_parts``).

Parts: authentication (a key-cache hit), normalization and hashing of the identifier
(first sight and memoized), the statement (client CPU and wall time of the round trip,
Postgres included in the wall time), decoding the document into the ``Profile`` struct
and encoding it for the wire. What a served lookup costs beyond their sum is the HTTP
server and the framework (routing, the auth hook, parameters, middleware, the response);
``measure_framework`` calls the read API and the bare endpoint as ASGI apps in this
process, without sockets, taking turns request by request, so their difference is the
framework's share alone and survives the machine changing speed under them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
import uuid

import msgspec

from core.identifiers import _normalize, normalize_identifier
from read_api.auth import KeyDirectory
from read_api.autocommit import fetch_one, statement_pool
from read_api.profiles import (
    _BY_IDENTIFIER_SQL,
    _decode_document,
    identifier_hash_from_query,
)
from stratum.settings import libpq_url


def _cpu_us(fn, n: int) -> float:
    t0 = time.process_time()
    for i in range(n):
        fn(i)
    return (time.process_time() - t0) / n * 1e6


async def _measure(database_url: str, tenant_id: str, api_key: str, emails: list[str], n: int) -> dict:
    async with statement_pool(libpq_url(database_url), 1, 1) as pool:
        keys = KeyDirectory(pool)
        await keys.lookup(api_key)
        t0 = time.process_time()
        for _ in range(n):
            await keys.lookup(api_key)
        auth_us = (time.process_time() - t0) / n * 1e6
        hashes = [identifier_hash_from_query("email", e, None, None) for e in emails]
        for h in hashes[:50]:  # let psycopg prepare the statement, as a busy process has
            await fetch_one(pool, _BY_IDENTIFIER_SQL, (tenant_id, *h))
        cpu0, wall0 = time.process_time(), time.perf_counter()
        docs = []
        for i in range(n):
            docs.append((await fetch_one(pool, _BY_IDENTIFIER_SQL, (tenant_id, *hashes[i % len(hashes)])))[0])
        query_cpu_us = (time.process_time() - cpu0) / n * 1e6
        query_wall_us = (time.perf_counter() - wall0) / n * 1e6
    profiles = [_decode_document(d) for d in docs]
    return {
        "auth_key_cache_hit": round(auth_us, 1),
        "normalize_and_hash_first_sight": round(_cpu_us(
            lambda i: _normalize("email", f" User{i}-{uuid.uuid4().hex[:6]}@Example.com ", None, frozenset()), n), 1),
        "normalize_and_hash_memoized": round(_cpu_us(
            lambda i: normalize_identifier("email", emails[i % len(emails)]), n), 1),
        "statement_client_cpu": round(query_cpu_us, 1),
        "statement_round_trip_wall": round(query_wall_us, 1),
        "decode_document_to_struct": round(_cpu_us(lambda i: _decode_document(docs[i]), n), 1),
        "encode_struct_to_json": round(_cpu_us(lambda i: msgspec.json.encode(profiles[i]), n), 1),
        "document_bytes": len(docs[0]),
    }


def measure_parts(database_url: str, tenant_id: str, api_key: str, emails: list[str], n: int = 2000) -> dict:
    """Microseconds per lookup of each part (see the module docstring)."""
    return asyncio.run(_measure(database_url, tenant_id, api_key, emails, n))


async def _asgi_get(app, path: str, query: str, headers: list[tuple[bytes, bytes]]) -> int:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
             "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "state": {}}
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"]


class _Lifespan:
    """An ASGI app's lifespan, started and stopped around the measurement."""

    def __init__(self, app) -> None:
        self.app = app
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.outbox: asyncio.Queue = asyncio.Queue()

    async def __aenter__(self):
        self.task = asyncio.create_task(self.app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                                 self.inbox.get, self.outbox.put))
        await self.inbox.put({"type": "lifespan.startup"})
        assert (await self.outbox.get())["type"] == "lifespan.startup.complete"
        return self.app

    async def __aexit__(self, *exc) -> None:
        await self.inbox.put({"type": "lifespan.shutdown"})
        await self.task


async def _interleaved_cpu_us(targets: dict, n: int, blocks: int) -> dict[str, list[float]]:
    """Thread CPU microseconds per lookup of each target (name -> (app, path, queries,
    headers)), the targets taking turns request by request in one event loop (the order
    reversed every other turn), so a change in the machine's speed, common on a shared
    machine, falls on all of them alike. One mean per block of ``n // blocks`` turns."""
    per_block: dict[str, list[float]] = {name: [] for name in targets}
    async with contextlib.AsyncExitStack() as stack:
        for app, *_ in targets.values():
            await stack.enter_async_context(_Lifespan(app))
        for app, path, queries, headers in targets.values():
            for q in queries[:200]:
                assert await _asgi_get(app, path, q, headers) == 200
        turns = list(targets.items())
        for block in range(blocks):
            spent = dict.fromkeys(targets, 0.0)
            for i in range(n // blocks):
                for name, (app, path, queries, headers) in (turns if i % 2 == 0 else turns[::-1]):
                    t0 = time.thread_time()
                    await _asgi_get(app, path, queries[(block * n + i) % len(queries)], headers)
                    spent[name] += time.thread_time() - t0
            for name in targets:
                per_block[name].append(spent[name] / (n // blocks) * 1e6)
    return per_block


def measure_framework(database_url: str, redis_url: str, tenant_id: str, api_key: str, emails: list[str],
                      n: int = 6000, blocks: int = 10) -> dict:
    """CPU microseconds per lookup of the read API and of the bare endpoint called in
    process (no sockets, same database), interleaved request by request
    (``_interleaved_cpu_us``): the mean of each, and the median over blocks of the
    difference (read API - bare)."""
    from bench.bare_read_app import create_app as create_bare
    from read_api.app import create_app as create_read
    from stratum.settings import Settings

    os.environ.update(BENCH_DATABASE_URL=libpq_url(database_url), BENCH_TENANT_ID=tenant_id)
    targets = {
        "bare": (create_bare(), "/lookup", [f"identifier_value={e}" for e in emails], []),
        "read": (create_read(Settings(database_url=database_url, redis_url=redis_url)), "/api/v1/cdp/profiles",
                 [f"identifier_type=email&identifier_value={e}" for e in emails],
                 [(b"authorization", f"Bearer {api_key}".encode())]),
    }
    cpu = asyncio.run(_interleaved_cpu_us(targets, n, blocks))
    return {"bare_in_process": round(statistics.mean(cpu["bare"]), 1),
            "read_api_in_process": round(statistics.mean(cpu["read"]), 1),
            "framework_difference": round(statistics.median(r - b for r, b in zip(cpu["read"], cpu["bare"], strict=True)), 1)}
