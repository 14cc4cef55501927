"""Latency of the workers' per-batch unmerge-block read (``_APART_SQL``) against the graph
read of the same batch, on an empty tenant (the common case: no blocks).

    python -m bench.identity_blocks_read [DATABASE_URL]

Prints one line; absolute numbers vary with the machine's load, compare the two.
"""

from __future__ import annotations

import sys
import time
import uuid

import psycopg

from stratum.db.params import json_rows, json_value
from workers.identity_store import _APART_SQL, _GRAPH_SQL


def _mean_us(conn: psycopg.Connection, sql: str, params, n: int = 2000) -> float:
    for _ in range(200):
        conn.execute(sql, params).fetchall()
    start = time.perf_counter()
    for _ in range(n):
        conn.execute(sql, params).fetchall()
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else "postgresql:///stratum_bench"
    with psycopg.connect(url, autocommit=True) as conn:
        tenant = str(uuid.uuid4())
        keys = json_rows([{"t": "anonymous_id", "h": uuid.uuid4().hex * 2} for _ in range(100)])
        profiles = json_value([str(uuid.uuid4()) for _ in range(50)])
        graph = _mean_us(conn, _GRAPH_SQL, (keys, tenant, tenant))
        blocks = _mean_us(conn, _APART_SQL, {"profiles": profiles, "tenant_id": tenant, "keys": keys})
    print(f"graph read {graph:.0f} us, blocks read {blocks:.0f} us per batch (100 identifiers, 50 profiles)")


if __name__ == "__main__":
    main()
