"""Monthly partitions of ``events``.

Partitions are named ``events_pYYYYMM`` and hold ``[first of month, first of next month)``
in UTC. The scheduler keeps the next months prepared; workers create a missing month on
demand before writing; the ``events_default`` partition catches anything else, so an
event is never failed for its time (CONTRACT section 6).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, date, datetime

import psycopg
from psycopg import sql

from core.event_time import retention_cutoff

log = logging.getLogger(__name__)

# Serializes partition DDL between processes (any constant works; it only has to be shared).
_PARTITION_LOCK_KEY = 0x5354_5241_5455_4D01


def month_start(ts: datetime) -> date:
    ts = ts.astimezone(UTC) if ts.tzinfo else ts
    return date(ts.year, ts.month, 1)


def add_months(d: date, n: int) -> date:
    y, m = divmod(d.month - 1 + n, 12)
    return date(d.year + y, m + 1, 1)


def partition_name(month: date) -> str:
    return f"events_p{month.year:04d}{month.month:02d}"


def existing_partitions(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'events'::regclass"
    ).fetchall()
    return {r[0] for r in rows}


def ensure_partitions(conn: psycopg.Connection, months: Iterable[date], *, lock_timeout_ms: int = 2000) -> list[str]:
    """Create the monthly partitions that are missing; return the names created.

    Runs its own short transactions (``conn`` must not be inside one). A month whose rows
    already sit in the default partition cannot get its own partition (Postgres refuses);
    those rows stay in the default partition, which is logged and harmless for reads.
    """
    wanted = {partition_name(m): m for m in months}
    if not wanted:
        return []
    missing = set(wanted) - existing_partitions(conn)
    created: list[str] = []
    for name in sorted(missing):
        month = wanted[name]
        try:
            with conn.transaction():
                conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PARTITION_LOCK_KEY,))
                conn.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} PARTITION OF events FOR VALUES FROM ({}) TO ({})"
                    ).format(
                        sql.Identifier(name),
                        sql.Literal(f"{month.isoformat()} 00:00:00+00"),
                        sql.Literal(f"{add_months(month, 1).isoformat()} 00:00:00+00"),
                    )
                )
            created.append(name)
        except (psycopg.errors.CheckViolation, psycopg.errors.LockNotAvailable) as exc:
            log.warning("partition %s not created, rows go to events_default: %s", name, exc)
    return created


def prepare_months_ahead(conn: psycopg.Connection, now: datetime, months_ahead: int) -> list[str]:
    """Make sure this month and the next ``months_ahead`` months have partitions."""
    start = month_start(now)
    return ensure_partitions(conn, (add_months(start, i) for i in range(months_ahead + 1)))


def drop_expired_partitions(conn: psycopg.Connection, now: datetime, retention_months: int) -> list[str]:
    """Retention: drop whole monthly partitions older than ``retention_months`` (the current
    month counts as one), and forget their dedupe keys and default-partition rows.

    A retried copy of a dropped event arriving later is stored again: dedupe is "forever,
    while the event is retained" (CONTRACT section 6).
    """
    cutoff_time = retention_cutoff(now, retention_months)  # the ingest API refuses older events
    if cutoff_time is None:
        return []
    cutoff = cutoff_time.date()
    dropped: list[str] = []
    for name in sorted(existing_partitions(conn)):
        if not name.startswith("events_p"):
            continue
        month = date(int(name[8:12]), int(name[12:14]), 1)
        if month < cutoff:
            with conn.transaction():
                conn.execute(f"SET LOCAL lock_timeout = {2000}")
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
            dropped.append(name)
    cutoff_ts = f"{cutoff.isoformat()} 00:00:00+00"
    with conn.transaction():
        conn.execute("DELETE FROM events_default WHERE event_time < %s", (cutoff_ts,))
        conn.execute("DELETE FROM event_keys WHERE event_time < %s", (cutoff_ts,))
    return dropped
