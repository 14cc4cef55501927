"""The same-run baseline: a raw COPY of N event-shaped rows into a scratch table."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import msgspec
import psycopg


def copy_baseline(database_url: str, n_rows: int) -> float:
    """Seconds to COPY ``n_rows`` rows shaped like ``events`` into an unindexed scratch table."""
    props = msgspec.json.encode({"product_id": "sku-1", "price": 19.99}).decode()
    ctx = msgspec.json.encode({"ip": "203.0.113.9", "userAgent": "Mozilla/5.0",
                               "library": {"name": "analytics-python", "version": "2.3.3"}}).decode()
    idents = msgspec.json.encode([["anonymous_id", "0" * 64]]).decode()
    tenant, source, now = str(uuid.uuid4()), str(uuid.uuid4()), datetime.now(UTC)
    rows = [(tenant, str(uuid.uuid4()), now, now, source, str(uuid.uuid4()), f"m-{i}", "track", "Product Viewed",
             props, ctx, idents, 60) for i in range(n_rows)]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_copy_scratch")
        conn.execute("CREATE TABLE bench_copy_scratch (LIKE events INCLUDING DEFAULTS)")
        start = time.perf_counter()
        with conn.transaction(), conn.cursor().copy(
            "COPY bench_copy_scratch (tenant_id, event_id, event_time, received_at, source_id, profile_id,"
            " dedupe_key, event_type, event_name, properties, context, identifiers, emq) FROM STDIN"
        ) as copy:
            for row in rows:
                copy.write_row(row)
        elapsed = time.perf_counter() - start
        conn.execute("DROP TABLE bench_copy_scratch")
    return elapsed
