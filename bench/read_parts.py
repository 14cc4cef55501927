"""The lookup path taken apart: CPU microseconds per lookup of each part, measured in one
process against the bench database (``python -m bench.read`` calls ``measure_parts``).

Parts: authentication (a key-cache hit), normalization and hashing of the identifier
(first sight and memoized), the statement (client CPU and wall time of the round trip,
Postgres included in the wall time), decoding the document into the ``Profile`` struct
and encoding it for the wire. What a served lookup costs beyond their sum is the HTTP
server and the framework (routing, guards, parameters, middleware, the response).
"""

from __future__ import annotations

import asyncio
import time
import uuid

import msgspec

from core.identifiers import _normalize, normalize_identifier
from read_api.auth import KeyDirectory
from read_api.profiles import (
    _BY_IDENTIFIER_SQL,
    _decode_profile,
    _fetch_one,
    identifier_hash_from_query,
)
from stratum.settings import libpq_url


def _cpu_us(fn, n: int) -> float:
    t0 = time.process_time()
    for i in range(n):
        fn(i)
    return (time.process_time() - t0) / n * 1e6


async def _measure(database_url: str, tenant_id: str, api_key: str, emails: list[str], n: int) -> dict:
    from psycopg_pool import AsyncConnectionPool

    async with AsyncConnectionPool(libpq_url(database_url), min_size=1, max_size=1,
                                   kwargs={"options": "-c TimeZone=UTC"}) as pool:
        keys = KeyDirectory(pool)
        await keys.lookup(api_key)
        t0 = time.process_time()
        for _ in range(n):
            await keys.lookup(api_key)
        auth_us = (time.process_time() - t0) / n * 1e6
        hashes = [identifier_hash_from_query("email", e, None, None) for e in emails]
        for h in hashes[:50]:  # let psycopg prepare the statement, as a busy process has
            await _fetch_one(pool, _BY_IDENTIFIER_SQL, (tenant_id, *h))
        cpu0, wall0 = time.process_time(), time.perf_counter()
        docs = []
        for i in range(n):
            docs.append((await _fetch_one(pool, _BY_IDENTIFIER_SQL, (tenant_id, *hashes[i % len(hashes)])))[0])
        query_cpu_us = (time.process_time() - cpu0) / n * 1e6
        query_wall_us = (time.perf_counter() - wall0) / n * 1e6
    profiles = [_decode_profile(d) for d in docs]
    return {
        "auth_key_cache_hit": round(auth_us, 1),
        "normalize_and_hash_first_sight": round(_cpu_us(
            lambda i: _normalize("email", f" User{i}-{uuid.uuid4().hex[:6]}@Example.com ", None, frozenset()), n), 1),
        "normalize_and_hash_memoized": round(_cpu_us(
            lambda i: normalize_identifier("email", emails[i % len(emails)]), n), 1),
        "statement_client_cpu": round(query_cpu_us, 1),
        "statement_round_trip_wall": round(query_wall_us, 1),
        "decode_document_to_struct": round(_cpu_us(lambda i: _decode_profile(docs[i]), n), 1),
        "encode_struct_to_json": round(_cpu_us(lambda i: msgspec.json.encode(profiles[i]), n), 1),
        "document_bytes": len(docs[0]),
    }


def measure_parts(database_url: str, tenant_id: str, api_key: str, emails: list[str], n: int = 2000) -> dict:
    """Microseconds per lookup of each part (see the module docstring)."""
    return asyncio.run(_measure(database_url, tenant_id, api_key, emails, n))
