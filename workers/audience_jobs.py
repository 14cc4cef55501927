"""The scheduler's audience jobs: membership and computed-trait upkeep, window slides,
churn, and volume anomalies. Each takes an autocommit connection and the settings.

Upkeep follows ``profiles.updated_at`` instead of hooking the workers' transaction, so the
per-event path pays nothing but one index entry: every run handles the live profiles
changed since the previous run's mark. The mark never passes a transaction still in flight
(it is the older of now and the oldest open transaction's start, and profiles written by
a transaction carry its start time), so a batch committing late is picked up by the next
run; handling a profile twice changes nothing.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import psycopg
from redis import Redis

from core.anomalies import AnomalyRules, history_of, judge_hour, weekly_ranges
from core.segment_rules import is_time_based
from stratum.audiences import (
    dynamic_segments,
    evaluate_segment,
    load_computed_traits,
    refresh_computed_trait,
    upkeep_profiles,
)
from stratum.db.connect import scalar
from stratum.settings import Settings
from workers.audience_emit import segment_topics_heard

log = logging.getLogger("stratum.scheduler")

UPKEEP_MARK = "audience_upkeep"
CHUNK_PROFILES = 5_000
CHUNK_ATTEMPTS = 3
CHURN_BATCH = 10_000


def upkeep_audiences(conn: psycopg.Connection, settings: Settings, redis: Redis | None = None) -> int:
    """Computed traits, then dynamic segment membership, for profiles changed since the mark;
    returns how many profiles were handled. ``redis``: to see live stream listeners (without
    it, membership changes always wait for the emission job)."""
    row = conn.execute("SELECT mark FROM scheduler_marks WHERE name = %s", (UPKEEP_MARK,)).fetchone()
    # First run: creating a definition evaluated every profile changed before it.
    since = row[0] if row is not None else scalar(
        conn, "SELECT least((SELECT min(updated_at) FROM segments WHERE kind = 'dynamic'),"
              " (SELECT min(updated_at) FROM computed_traits))")
    # Transactions older than twice the job timeout are not a worker's batch (RQ would have
    # killed it): an operator's forgotten session must not hold the mark back forever.
    new_mark = scalar(
        conn, "SELECT least(now(), (SELECT min(xact_start) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL"
        " AND xact_start > now() - make_interval(secs => %s)))", (2 * settings.job_timeout_s,))
    # The upkeep's own writes are stamped just inside the range it handles, so the next run
    # does not take them for new changes (the segments already saw them, in the same
    # transaction); for exports they count as changed no later than the mark.
    stamp = new_mark - timedelta(microseconds=1)
    handled = 0
    if since is not None:
        touched: dict[str, list[str]] = defaultdict(list)
        # Only tenants that define something to keep current.
        for tenant_id, profile_id in conn.execute(
                "SELECT tenant_id::text, id::text FROM profiles WHERE updated_at >= %s AND updated_at < %s"
                " AND tenant_id IN (SELECT tenant_id FROM segments WHERE kind = 'dynamic'"
                " UNION SELECT tenant_id FROM computed_traits)", (since, new_mark)):
            touched[tenant_id].append(profile_id)
        for tenant_id, ids in touched.items():
            handled += len(ids)
            for start in range(0, len(ids), CHUNK_PROFILES):
                _upkeep_chunk(conn, tenant_id, ids[start:start + CHUNK_PROFILES], stamp, redis)
    conn.execute("INSERT INTO scheduler_marks (name, mark) VALUES (%s, %s)"
                 " ON CONFLICT (name) DO UPDATE SET mark = EXCLUDED.mark", (UPKEEP_MARK, new_mark))
    return handled


def _upkeep_chunk(conn: psycopg.Connection, tenant_id: str, ids: list[str], stamp: datetime,
                  redis: Redis | None) -> None:
    # Workers lock profile rows in id order; the upkeep's row versions and its members'
    # foreign-key checks take theirs in plan order, so a worker and the upkeep can deadlock.
    # Postgres breaks the cycle; the worker retries its batch and the chunk is run again.
    unheard = redis is not None and not segment_topics_heard(conn, redis, tenant_id)
    for attempt in range(CHUNK_ATTEMPTS):
        try:
            upkeep_profiles(conn, tenant_id, ids, stamp, unheard=unheard)
            return
        except psycopg.errors.DeadlockDetected:
            if attempt == CHUNK_ATTEMPTS - 1:
                raise
            log.warning("audience upkeep: deadlock with a worker, chunk of %d profile(s) run again", len(ids))


def refresh_audiences(conn: psycopg.Connection, settings: Settings) -> None:
    """Window slides: recount every computed trait in full, then re-evaluate dynamic segments
    whose rules depend on time alone. Changed computed values move ``updated_at``, so the
    segments that read them follow through the upkeep."""
    tenants = conn.execute("SELECT DISTINCT tenant_id::text FROM computed_traits"
                           " UNION SELECT DISTINCT tenant_id::text FROM segments WHERE kind = 'dynamic'").fetchall()
    for (tenant_id,) in tenants:
        for trait in load_computed_traits(conn, tenant_id):
            with conn.transaction():
                refresh_computed_trait(conn, tenant_id, trait)
                conn.execute("UPDATE computed_traits SET refreshed_at = now() WHERE tenant_id = %s AND name = %s",
                             (tenant_id, trait.name))
        for segment_id, rules in dynamic_segments(conn, tenant_id):
            if is_time_based(rules):
                evaluate_segment(conn, tenant_id, segment_id, rules)


def churn_profiles(conn: psycopg.Connection, settings: Settings) -> None:
    """Move live profiles with no event for N days (tenant setting ``churn_after_days``, a
    positive whole number; else STRATUM_CHURN_AFTER_DAYS) to ``churned``, in batches. A new
    event brings them back (core.profiles.next_lifecycle)."""
    moved = 0
    while True:
        n = conn.execute(
            """
            UPDATE profiles SET lifecycle = 'churned', updated_at = now()
            WHERE (tenant_id, id) IN (
                SELECT p.tenant_id, p.id FROM profiles p JOIN tenants t ON t.id = p.tenant_id
                WHERE p.merged_into IS NULL AND p.lifecycle <> 'churned'
                  AND p.last_seen < now() - make_interval(days => CASE
                      WHEN jsonb_typeof(t.settings -> 'churn_after_days') = 'number'
                           AND (t.settings ->> 'churn_after_days')::numeric BETWEEN 1 AND 36500
                      THEN (t.settings ->> 'churn_after_days')::numeric::int ELSE %s END)
                LIMIT %s FOR UPDATE OF p SKIP LOCKED)
            """, (settings.churn_after_days, CHURN_BATCH)).rowcount
        moved += n
        if n < CHURN_BATCH:
            break
    if moved:
        log.info("churn: %d profile(s) moved to churned", moved)


def detect_anomalies(conn: psycopg.Connection, settings: Settings, now: datetime | None = None) -> None:
    """Judge each source's last 24 completed hours against the same hours of past weeks;
    record drops and spikes once per (source, hour, kind), later runs updating the figures."""
    rules = AnomalyRules(threshold=settings.anomaly_threshold, min_weeks=settings.anomaly_min_weeks,
                         min_expected=settings.anomaly_min_expected)
    weeks = max(1, settings.anomaly_lookback_weeks)
    end = (now or datetime.now(UTC)).astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    judged = [end - timedelta(hours=h) for h in range(24, 0, -1)]
    ranges = weekly_ranges(judged[0], end, weeks)
    where = " OR ".join("(event_time >= %s AND event_time < %s)" for _ in ranges)
    flat = [t for r in ranges for t in r]
    for (tenant_id,) in conn.execute("SELECT DISTINCT tenant_id::text FROM sources WHERE active").fetchall():
        counts: dict[tuple[str, datetime], int] = {}
        for source_id, hour, n in conn.execute(
                f"SELECT source_id::text, date_trunc('hour', event_time, 'UTC'), count(*) FROM events"
                f" WHERE tenant_id = %s AND ({where}) GROUP BY 1, 2", (tenant_id, *flat)):
            counts[(source_id, hour)] = n
        first_hour: dict[str, datetime] = {}
        for source_id, hour in counts:
            first_hour[source_id] = min(hour, first_hour.get(source_id, hour))
        active = {r[0] for r in conn.execute("SELECT id::text FROM sources WHERE tenant_id = %s AND active",
                                             (tenant_id,))}
        found = []
        for source_id in sorted(active & set(first_hour)):
            for hour in judged:
                if hour < first_hour[source_id]:
                    continue
                history = history_of(counts, source_id, hour, weeks, first_hour[source_id])
                judgement = judge_hour(counts.get((source_id, hour), 0), history, rules)
                if judgement is not None and judgement.kind is not None:
                    found.append((tenant_id, source_id, hour, judgement.kind, counts.get((source_id, hour), 0),
                                  judgement.expected, judgement.score))
        if found:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO anomalies (tenant_id, source_id, hour, kind, observed, expected, score)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (tenant_id, source_id, hour, kind) DO UPDATE"
                    " SET observed = EXCLUDED.observed, expected = EXCLUDED.expected, score = EXCLUDED.score,"
                    " updated_at = now()", found)
            log.info("anomalies: %d flagged hour(s) for tenant %s", len(found), tenant_id)
