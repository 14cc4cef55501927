"""Emission of the audiences' messages through the destinations outbox: ``segment.entered``
and ``segment.exited`` (rows of ``segment_events``) and ``anomaly.detected`` (rows of
``anomalies``) whose ``emitted_at`` is NULL.

Exactly once: one transaction claims a batch of pending rows (``FOR UPDATE SKIP LOCKED``),
sets their ``emitted_at`` and writes their ``deliveries`` rows, so a crash before the commit
leaves them pending and a second scheduler never takes the same rows. Routing and the row
format are the outbox's (workers/outbox.py): the destinations active at emission time that
subscribe to the topic; the delivery process then signs, applies the consent gate (segment
messages carry their ``profile_id``; ``anomaly.detected`` is never gated) and retries as for
every other topic. A pending membership change of a profile erased since is marked emitted
without a message. Live stream clients get the same bodies after the commit (best effort,
as from the workers).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
from redis import Redis
from redis.exceptions import RedisError

from core.webhooks import message_body
from stratum.queue.deliveries import stream_channel
from workers.outbox import Route, insert_messages, routes_of

log = logging.getLogger("stratum.scheduler")

# Rows claimed per transaction: bounds the transaction's length and the memory of one batch.
EMIT_BATCH = 5_000

_CLAIM_SEGMENT_EVENTS_SQL = """
WITH pending AS (
    SELECT id FROM segment_events WHERE emitted_at IS NULL ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED
)
UPDATE segment_events e SET emitted_at = now() FROM pending WHERE e.id = pending.id
RETURNING e.id, e.tenant_id::text, e.segment_id::text, e.profile_id::text, e.kind, e.at,
    (SELECT s.name FROM segments s WHERE s.tenant_id = e.tenant_id AND s.id = e.segment_id),
    EXISTS (SELECT 1 FROM profiles p WHERE p.id = e.profile_id)
"""

_CLAIM_ANOMALIES_SQL = """
WITH pending AS (
    SELECT tenant_id, source_id, hour, kind FROM anomalies WHERE emitted_at IS NULL
    ORDER BY tenant_id, hour LIMIT %s FOR UPDATE SKIP LOCKED
)
UPDATE anomalies a SET emitted_at = now() FROM pending
WHERE (a.tenant_id, a.source_id, a.hour, a.kind) = (pending.tenant_id, pending.source_id, pending.hour, pending.kind)
RETURNING a.tenant_id::text, a.source_id::text, a.hour, a.kind, a.observed, a.expected, a.score
"""


def segment_message_id(segment_event_id: int) -> str:
    """``webhook-id`` of a ``segment.entered``/``segment.exited`` message (one per history row)."""
    return f"msg_segment_{segment_event_id}"


def anomaly_message_id(source_id: str, hour: datetime, kind: str) -> str:
    """``webhook-id`` of an ``anomaly.detected`` message: one per (source, hour, kind)."""
    return f"msg_anomaly_{source_id}_{int(hour.timestamp())}_{kind}"


def _subscribed(routes: list[Route], topic: str) -> list[str]:
    return [r.destination_id for r in routes if topic in r.topics]


SEGMENT_TOPICS = ("segment.entered", "segment.exited")


def segment_topics_heard(conn: psycopg.Connection, redis: Redis, tenant_id: str) -> bool:
    """Whether an active destination subscribes to a segment topic or a live stream client
    listens (then membership changes wait for emission; otherwise nobody would get them)."""
    if any(t in r.topics for r in routes_of(conn, tenant_id) for t in SEGMENT_TOPICS):
        return True
    return _stream_listening(redis, tenant_id)


def _stream_listening(redis: Redis | None, tenant_id: str) -> bool:
    if redis is None:
        return False
    try:
        ((_, count),) = redis.pubsub_numsub(stream_channel(tenant_id))
    except RedisError:
        return False
    return count > 0


def _publish(redis: Redis | None, bodies: dict[str, list[str]]) -> None:
    """Publish committed messages to live stream clients; best effort (the stream does not replay)."""
    if redis is None:
        return
    for tenant_id, tenant_bodies in bodies.items():
        if not tenant_bodies:
            continue
        try:
            with redis.pipeline(transaction=False) as pipe:
                for body in tenant_bodies:
                    pipe.publish(stream_channel(tenant_id), body)
                pipe.execute()
        except RedisError as exc:
            log.warning("live stream publish failed for tenant %s: %s", tenant_id, exc)


def _write(conn: psycopg.Connection, redis: Redis | None, per_tenant: dict[str, list[tuple[str, str, str | None, dict]]],
           stream: dict[str, list[str]]) -> int:
    """Outbox rows for ``per_tenant`` = {tenant: [(topic, message id, profile id, data)]};
    bodies for the live stream collected into ``stream``. Returns rows written."""
    now = datetime.now(UTC)
    written = 0
    for tenant_id, messages in per_tenant.items():
        routes = routes_of(conn, tenant_id)
        listening = _stream_listening(redis, tenant_id)
        rows: list[dict[str, Any]] = []
        for topic, message_id, profile_id, data in messages:
            targets = _subscribed(routes, topic)
            if not targets and not listening:
                continue
            body = message_body(topic, now, data).decode()
            rows.extend({"d": d, "m": message_id, "t": topic, "p": profile_id, "b": body} for d in targets)
            if listening:
                stream[tenant_id].append(body)
        written += insert_messages(conn, tenant_id, rows)
    return written


# A claimed row as (tenant id, (topic, message id, profile id or None, data)), or None to skip it.
_Message = tuple[str, tuple[str, str, str | None, dict[str, Any]]]


def _emit_claimed(conn: psycopg.Connection, redis: Redis | None, claim_sql: str,
                  message_of: Callable[[tuple], _Message | None]) -> int:
    """Claim pending rows a batch per transaction (``claim_sql`` marks them emitted), write
    their messages to the outbox in that transaction, publish the live stream's after it;
    returns how many outbox rows were written. The connection must not be inside a
    transaction."""
    written = 0
    while True:
        stream: dict[str, list[str]] = defaultdict(list)
        with conn.transaction():
            claimed = conn.execute(claim_sql, (EMIT_BATCH,)).fetchall()
            per_tenant: dict[str, list] = defaultdict(list)
            for row in sorted(claimed):
                if (message := message_of(row)) is not None:
                    per_tenant[message[0]].append(message[1])
            written += _write(conn, redis, per_tenant, stream)
        _publish(redis, stream)
        if len(claimed) < EMIT_BATCH:
            return written


def _segment_message(row: tuple) -> _Message | None:
    event_id, tenant_id, segment_id, profile_id, kind, at, name, live = row
    if not live:
        return None
    data = {"segment_id": segment_id, "segment_name": name, "profile_id": profile_id,
            "at": at.astimezone(UTC).isoformat()}
    return tenant_id, (f"segment.{kind}", segment_message_id(event_id), profile_id, data)


def _anomaly_message(row: tuple) -> _Message:
    tenant_id, source_id, hour, kind, observed, expected, score = row
    data = {"source_id": source_id, "hour": hour.astimezone(UTC).isoformat(), "observed": observed,
            "expected": expected, "score": score, "kind": kind}
    return tenant_id, ("anomaly.detected", anomaly_message_id(source_id, hour, kind), None, data)


def emit_segment_events(conn: psycopg.Connection, redis: Redis | None = None) -> int:
    """Emit every pending membership change, a batch per transaction; returns how many
    outbox rows were written. The caller's connection must not be inside a transaction."""
    return _emit_claimed(conn, redis, _CLAIM_SEGMENT_EVENTS_SQL, _segment_message)


def emit_anomalies(conn: psycopg.Connection, redis: Redis | None = None) -> int:
    """Emit every anomaly not emitted yet (once per (source, hour, kind); later updates of
    its figures send nothing); returns how many outbox rows were written."""
    return _emit_claimed(conn, redis, _CLAIM_ANOMALIES_SQL, _anomaly_message)


def emit_audience_messages(conn: psycopg.Connection, redis: Redis | None = None) -> None:
    """The scheduler job: pending membership changes, then pending anomalies."""
    n = emit_segment_events(conn, redis) + emit_anomalies(conn, redis)
    if n:
        log.info("audiences: %d message(s) written to the outbox", n)
